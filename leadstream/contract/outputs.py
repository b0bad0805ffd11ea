"""Records leadstream publishes. Their JSON Schemas live in ``schemas/`` too.

The models forbid unknown fields (a test checks that every published record is exactly
what its model writes), but their JSON Schemas leave ``additionalProperties`` open: a
field added in a later version must not break a consumer that validates strictly.

>>> "additionalProperties" in LeadScore.model_json_schema()
False
>>> LeadScore.model_json_schema()["properties"]["lead_id"]["description"]
'the lead scored (also the record key)'
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Union

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter


def _open_to_added_fields(schema: dict[str, Any]) -> None:
    schema.pop("additionalProperties", None)


class _Out(BaseModel):
    # the docstring under a field is its description in the JSON Schema
    model_config = ConfigDict(extra="forbid", use_attribute_docstrings=True,
                              json_schema_extra=_open_to_added_fields)


class RecommendedItem(_Out):
    property_id: str
    """the listing recommended"""
    rank: Annotated[int, Field(ge=1)]
    """its position in the list, from 1"""
    score: float
    """model score; higher is better, comparable within one list"""
    reason: str
    """plain-language reason built from the lead's own behaviour"""
    price: float | None = None
    """the listing's price when the list was made"""
    bedrooms: int | None = None
    """the listing's bedrooms"""
    property_type: str | None = None
    """the listing's property type"""
    city: str | None = None
    """the listing's city"""


class Recommendation(_Out):
    """One ranked list for one lead on the ``recommendations`` topic (key = lead_id)."""

    recommendation_id: str
    """derived from the triggering event; report it back in recommendation_shown/_clicked"""
    lead_id: str
    """the lead the list is for (also the record key)"""
    trigger: str
    """why: first_event, session_started, strong_signal, top_k_changed, preference_drift"""
    source_event_id: str
    """the event_id of the event that triggered it"""
    event_time: AwareDatetime
    """event time of the event that triggered it"""
    emitted_at: AwareDatetime
    """wall-clock time the worker sent it"""
    model_version: str
    """the model snapshot version that ranked the list"""
    confidence: Annotated[float, Field(ge=0, le=1)]
    """how sure the ranking is, 0-1: evidence about the lead and models agreeing"""
    explanation: str
    """plain-language summary of why these listings"""
    items: list[RecommendedItem]
    """the listings, best first"""
    experiment: str | None = None
    """the A/B experiment the lead is in, if any"""
    arm: str | None = None
    """the experiment's arm that ranked this list"""


class LeadScore(_Out):
    """A lead's qualification score on the ``lead-scores`` topic (key = lead_id)."""

    lead_id: str
    """the lead scored (also the record key)"""
    score: Annotated[float, Field(ge=0, le=100)]
    """0-100: likelihood to convert"""
    tier: str
    """hot (>= 70), warm (>= 40) or cold"""
    reasons: list[str]
    """what adds most to the score, plain language"""
    model: str
    """heuristic-1, or river-logreg-N once N labels were learned"""
    contact_at: AwareDatetime
    """suggested time of the next contact"""
    contact_reason: str
    """why that time, plain language (e.g. the lead's busiest local hour)"""
    source_event_id: str
    """the event_id of the event that changed the score"""
    event_time: AwareDatetime
    """event time of that event"""
    emitted_at: AwareDatetime
    """wall-clock time the worker sent it"""
    trigger: str
    """first_score, tier_changed, score_changed or crm_event"""


class Figure(_Out):
    value: float | None
    """the agent's figure (null: not enough data)"""
    team_median: float | None
    """the median of the team's agents"""


class AgentInsight(_Out):
    """An agent's performance against the team median (``agent-insights``, key = agent_id)."""

    type: Literal["agent_insight"] = "agent_insight"
    """the kind of insight"""
    agent_id: str
    """the agent (also the record key)"""
    generated_at: AwareDatetime
    """wall-clock time the figures were computed"""
    figures: dict[str, Figure]
    """leads_handled, hot_response_minutes, contact_to_response, booking_rate, conversion_rate"""
    hints: list[str]
    """coaching hints that follow from the figures"""


class PreferenceDrift(_Out):
    """A lead's taste changed (``agent-insights``, key = the assigned agent, else the lead)."""

    type: Literal["preference_drift"] = "preference_drift"
    """the kind of insight"""
    agent_id: str | None
    """the lead's assigned agent (null: none yet)"""
    lead_id: str
    """the lead whose taste changed"""
    changes: list[str]
    """what changed, plain language"""
    message: str
    """a one-line summary for the agent"""
    source_event_id: str
    """the event_id of the event that showed the change"""
    event_time: AwareDatetime
    """event time of that event"""
    emitted_at: AwareDatetime
    """wall-clock time the worker sent it"""


AGENT_INSIGHTS = TypeAdapter(Annotated[Union[AgentInsight, PreferenceDrift],  # noqa: UP007
                                       Field(discriminator="type")])
OUTPUT_RECORDS = {"recommendation.json": Recommendation, "lead-score.json": LeadScore,
                  "agent-insights.json": AGENT_INSIGHTS}
