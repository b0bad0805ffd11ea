"""Topics as declared in ``topics.yaml``, and ``leadstream topics apply``."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import yaml

from leadstream.contract.resources import bundled

DEFAULT_TOPICS_FILE = bundled("topics.yaml")


@dataclass(frozen=True)
class TopicSpec:
    name: str  # logical name, as in topics.yaml
    full_name: str  # with the prefix
    partitions: int
    replication_factor: int
    key: str
    schema: str | None
    description: str = ""
    config: dict[str, str] = field(default_factory=dict)


def load_topics(settings) -> dict[str, TopicSpec]:
    """Topic specs by logical name (``interactions``, ``properties``, …)."""
    path = Path(settings.topics_file or DEFAULT_TOPICS_FILE)
    doc = yaml.safe_load(path.read_text())
    rf = int(doc.get("defaults", {}).get("replication_factor", 1))
    out = {}
    for name, t in doc["topics"].items():
        out[name] = TopicSpec(
            name=name,
            full_name=settings.topic(name),
            partitions=int(t["partitions"]),
            replication_factor=int(t.get("replication_factor", rf)),
            key=str(t.get("key", "")),
            schema=t.get("schema"),
            description=t.get("description", ""),
            config={k: str(v) for k, v in (t.get("config") or {}).items()},
        )
    return out


@dataclass
class ApplyReport:
    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    differences: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)  # declared, absent, not created

    def lines(self) -> list[str]:
        out = [f"created   {n}" for n in self.created]
        out += [f"MISSING   {n}" for n in self.missing]
        out += [f"ok        {n}" for n in self.unchanged]
        out += [f"DIFFERS   {d}" for d in self.differences]
        return out


async def apply_topics(settings, timeout: float = 30.0, create: bool = True) -> ApplyReport:
    """Create missing topics (``create=False``: only report them); report partition or
    config differences of existing ones."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    specs = load_topics(settings)
    admin = AIOKafkaAdminClient(request_timeout_ms=int(timeout * 1000),
                                **settings.kafka_client_kwargs())
    await admin.start()
    report = ApplyReport()
    try:
        existing = set(await admin.list_topics())
        missing = [s for s in specs.values() if s.full_name not in existing]
        if missing and not create:
            report.missing = [s.full_name for s in missing]
        elif missing:
            await admin.create_topics(
                [
                    NewTopic(s.full_name, s.partitions, s.replication_factor,
                             topic_configs=dict(s.config))
                    for s in missing
                ]
            )
            report.created = [s.full_name for s in missing]
        present = [s for s in specs.values() if s.full_name in existing]
        if present:
            meta = await admin.describe_topics([s.full_name for s in present])
            parts = {m["topic"]: len(m["partitions"]) for m in meta}
            cfg_resp = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, s.full_name) for s in present]
            )
            configs: dict[str, dict[str, str]] = {}
            for resp in cfg_resp:
                for res in resp.resources:
                    # (error_code, error_message, resource_type, resource_name, config_entries)
                    configs[res[3]] = {e[0]: e[1] for e in res[4]}
            for s in present:
                diffs = []
                if parts.get(s.full_name) != s.partitions:
                    diffs.append(f"partitions {parts.get(s.full_name)} (declared {s.partitions})")
                actual = configs.get(s.full_name, {})
                for k, v in s.config.items():
                    if actual.get(k) != v:
                        diffs.append(f"{k}={actual.get(k)} (declared {v})")
                if diffs:
                    report.differences.append(f"{s.full_name}: " + ", ".join(diffs))
                else:
                    report.unchanged.append(s.full_name)
    finally:
        await admin.close()
    return report
