"""Records leadstream publishes. Their JSON Schemas live in ``schemas/`` too."""

from __future__ import annotations

from typing import Annotated, Literal, Union

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, TypeAdapter


class _Out(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RecommendedItem(_Out):
    property_id: str
    rank: Annotated[int, Field(ge=1)]
    score: float = Field(description="model score; higher is better, comparable within one event")
    reason: str = Field(description="plain-language reason built from the lead's own behaviour")
    price: float | None = None
    bedrooms: int | None = None
    property_type: str | None = None
    city: str | None = None


class Recommendation(_Out):
    """One ranked list for one lead on the ``recommendations`` topic (key = lead_id)."""

    recommendation_id: str
    lead_id: str
    trigger: str = Field(description="what made it due: first_event, session_started, "
                         "strong_signal, top_k_changed")
    source_event_id: str
    event_time: AwareDatetime = Field(description="event time of the event that triggered it")
    emitted_at: AwareDatetime = Field(description="wall-clock time the worker sent it")
    model_version: str
    confidence: Annotated[float, Field(ge=0, le=1)]
    explanation: str
    items: list[RecommendedItem]
    experiment: str | None = None
    arm: str | None = None


class LeadScore(_Out):
    """A lead's qualification score on the ``lead-scores`` topic (key = lead_id)."""

    lead_id: str
    score: Annotated[float, Field(ge=0, le=100, description="0-100: likelihood to convert")]
    tier: str = Field(description="hot (>= 70), warm (>= 40) or cold")
    reasons: list[str] = Field(description="what adds most to the score, plain language")
    model: str = Field(description="heuristic-1, or river-logreg-N once N labels were learned")
    contact_at: AwareDatetime = Field(description="suggested time of the next contact")
    contact_reason: str
    source_event_id: str
    event_time: AwareDatetime
    emitted_at: AwareDatetime
    trigger: str = Field(description="first_score, tier_changed, score_changed or crm_event")


class Figure(_Out):
    value: float | None
    team_median: float | None


class AgentInsight(_Out):
    """An agent's performance against the team median (``agent-insights``, key = agent_id)."""

    type: Literal["agent_insight"] = "agent_insight"
    agent_id: str
    generated_at: AwareDatetime
    figures: dict[str, Figure] = Field(description="leads_handled, hot_response_minutes, "
                                       "contact_to_response, booking_rate, conversion_rate")
    hints: list[str] = Field(description="coaching hints that follow from the figures")


class PreferenceDrift(_Out):
    """A lead's taste changed (``agent-insights``, key = the assigned agent, else the lead)."""

    type: Literal["preference_drift"] = "preference_drift"
    agent_id: str | None
    lead_id: str
    changes: list[str]
    message: str
    source_event_id: str
    event_time: AwareDatetime
    emitted_at: AwareDatetime


AGENT_INSIGHTS = TypeAdapter(Annotated[Union[AgentInsight, PreferenceDrift],  # noqa: UP007
                                       Field(discriminator="type")])
OUTPUT_RECORDS = {"recommendation.json": Recommendation, "lead-score.json": LeadScore,
                  "agent-insights.json": AGENT_INSIGHTS}
