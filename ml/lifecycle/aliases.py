"""Alias moves of the registry, serialized and audited: the promotion gate and the rollback move
`champion` / `challenger` only through here.

Moves are serialized by a lock (an OS file lock beside the SQLite registry; see `lock_dir` for a
server) and checked against the alias they were decided on (compare-and-set). MLflow keeps no
alias history, so each move is an append-only audit entry on the registered model
(`alias_audit/<n>`: who, when, from, to, why) written *before* the move and closed by an outcome
record after it; a crash in between is repaired by the next gate or rollback. The champion
history is read from that audit record, so it cannot disagree with the alias.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import os
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from mlflow.exceptions import MlflowException

from ml.settings import registry_pause_marker

CHAMPION = "champion"
CHALLENGER = "challenger"
REJECTED = "rejected"
"""A gate decision that moves no alias: the version's artifact failed verification."""
GATE_DECISION = "gate_decision"
GATE_REASON = "gate_reason"
GATE_SCORE = "gate_score"
"""The score the gate computed itself, on `gate_test_version`: the one it decided on."""
GATE_TEST_VERSION = "gate_test_version"
AUDIT_PREFIX = "alias_audit/"
"""Registered-model tags `alias_audit/000001` (the intent) and `…/outcome` (how it ended)."""
AUDIT_WHY_MAX_CHARS = 2000
"""A registered-model tag holds 5000 characters on a PostgreSQL backend."""
ALIAS_LOCK_WAIT_SECONDS = 120.0
REGISTRATION = "registration"
"""Version tag: `complete` once registered whole, `failed` otherwise; no alias points at a
version that is not complete."""


class RegistrationFailed(RuntimeError):
    """Logging or registering failed part-way; the version (if any) is tagged failed."""


class AliasMoved(RuntimeError):
    """Compare-and-set failed: the champion moved after the decision was computed."""


class AlreadyDecided(RuntimeError):
    """Another gate run decided this version first: one decision per version."""


class RegistryDiverged(RuntimeError):
    """An alias points where the audit record says it should not: moved outside the gate and
    the rollback. Nothing is moved until a person sets it right."""


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def default_actor() -> str:
    """Who moves an alias: the OS user, host and process."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = f"uid {os.getuid()}"
    return f"{user}@{socket.gethostname()} pid {os.getpid()}"


@dataclass(frozen=True)
class AuditEntry:
    """One alias move (or a decision that moves none), as intended before it was made."""

    id: int
    action: str
    """promote, challenger, reject, rollback, pin (a person's choice), release (a challenger
    promoted after its canary), withdraw (a challenger sent back), or adopt (aliases found
    before any record)."""
    version: str
    moves: Mapping[str, tuple[str | None, str | None]]
    """alias → (from, to); None: the alias is absent."""
    version_tags: Mapping[str, Mapping[str, str]]
    """version → tags written with the move (the gate's decision, the rollback's reason)."""
    why: str
    who: str
    via: str
    when: str
    outcome: str | None = None
    """None while pending; done, or repaired (completed by a later run after a crash)."""

    def to_json(self) -> str:
        record = {
            "action": self.action,
            "version": self.version,
            "moves": {alias: list(move) for alias, move in self.moves.items()},
            "version_tags": self.version_tags,
            "why": self.why[:AUDIT_WHY_MAX_CHARS],
            "who": self.who,
            "via": self.via,
            "when": self.when,
        }
        return json.dumps(record)

    @classmethod
    def from_json(cls, number: int, text: str, outcome: str | None) -> AuditEntry:
        record = json.loads(text)
        moves = {alias: (move[0], move[1]) for alias, move in record["moves"].items()}
        return cls(
            number,
            record["action"],
            record["version"],
            moves,
            record["version_tags"],
            record["why"],
            record["who"],
            record["via"],
            record["when"],
            outcome,
        )


class AliasMoves:
    """The alias half of `Registry` (which it is mixed into): needs `client`, `tracking_uri`,
    `_lock_dir`, `version`, `champion` and `_model_exists` from it."""

    @property
    def lock_dir(self) -> Path:
        """Where the alias lock file lives: beside the SQLite registry (under the data home), so
        every process of the embedded default shares it. For a server, a folder per server URL
        on this machine: it serializes the gates and rollbacks of one host; a deployment whose
        runs move aliases from several hosts passes a `lock_dir` on a shared volume (or puts a
        PostgreSQL advisory lock here); Dagster's registry pool serializes its own runs."""
        if self._lock_dir:
            return Path(self._lock_dir)
        if self.tracking_uri.startswith("sqlite:///"):
            return Path(self.tracking_uri.removeprefix("sqlite:///")).parent
        key = hashlib.sha256(self.tracking_uri.encode()).hexdigest()[:12]
        return Path(tempfile.gettempdir()) / "mlops-registry-locks" / key

    def audit(self, name: str) -> list[AuditEntry]:
        """Every alias move of `name`, oldest first, with its outcome (None: pending)."""
        if not self._model_exists(name):
            return []
        tags = self.client.get_registered_model(name).tags
        entries = []
        for key, text in tags.items():
            rest = key.removeprefix(AUDIT_PREFIX)
            if rest == key or not rest.isdigit():
                continue
            outcome = tags.get(f"{key}/outcome")
            done = json.loads(outcome)["outcome"] if outcome else None
            entries.append(AuditEntry.from_json(int(rest), text, done))
        return sorted(entries, key=lambda entry: entry.id)

    def _aliases(self, name: str) -> dict[str, str]:
        if not self._model_exists(name):
            return {}
        found = self.client.get_registered_model(name).aliases or {}
        return {alias: str(version) for alias, version in dict(found).items()}

    @staticmethod
    def _applied(entry: AuditEntry, aliases: Mapping[str, str]) -> bool:
        """Done, or pending but its moves already made (a crash before the outcome)."""
        if entry.outcome is not None:
            return True
        return bool(entry.moves) and all(
            aliases.get(alias) == to for alias, (_, to) in entry.moves.items()
        )

    def champion_history(self, name: str) -> list[str]:
        """The versions that held `champion`, oldest first, from the audit record (a rollback
        pops the last one)."""
        aliases = self._aliases(name)
        history: list[str] = []
        for entry in self.audit(name):
            if CHAMPION not in entry.moves or not self._applied(entry, aliases):
                continue
            if entry.action == "rollback":
                del history[-1:]
            elif (to := entry.moves[CHAMPION][1]) is not None and history[-1:] != [to]:
                history.append(to)
        return history

    @contextlib.contextmanager
    def _alias_lock(self, name: str) -> Iterator[None]:
        """One alias-moving operation at a time per registered model, across processes."""
        path = self.lock_dir / f"{name}.aliases.lock"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            deadline = time.monotonic() + ALIAS_LOCK_WAIT_SECONDS
            while True:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(
                            f"{name}: another promotion gate or rollback held {path} for more "
                            f"than {ALIAS_LOCK_WAIT_SECONDS:.0f} s"
                        ) from None
                    time.sleep(0.05)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _move(self, name: str, alias: str, to: str | None) -> None:
        if to is None:
            with contextlib.suppress(MlflowException):
                self.client.delete_registered_model_alias(name, alias)
        else:
            self.client.set_registered_model_alias(name, alias, to)

    def _close(self, name: str, entry_id: int, outcome: str) -> None:
        self.client.set_registered_model_tag(
            name,
            f"{AUDIT_PREFIX}{entry_id:06d}/outcome",
            json.dumps({"outcome": outcome, "when": _now()}),
        )

    def _commit(
        self,
        name: str,
        action: str,
        version: str,
        moves: Mapping[str, tuple[str | None, str | None]],
        version_tags: Mapping[str, Mapping[str, str]],
        why: str,
        via: str,
        who: str = "",
    ) -> AuditEntry:
        """Intent first, then the tags and the moves, then the outcome (under the lock)."""
        entries = self.audit(name)
        entry = AuditEntry(
            (entries[-1].id + 1) if entries else 1,
            action,
            version,
            dict(moves),
            {v: dict(tags) for v, tags in version_tags.items()},
            why,
            who or default_actor(),
            via,
            _now(),
        )
        self.client.set_registered_model_tag(name, f"{AUDIT_PREFIX}{entry.id:06d}", entry.to_json())
        self._apply(name, entry)
        if entry.moves and (marker := registry_pause_marker()):
            marker.write_text(json.dumps({"entry": entry.id, "pid": os.getpid()}))
            deadline = time.monotonic() + 300
            while Path(marker).exists() and time.monotonic() < deadline:
                time.sleep(0.05)
        self._close(name, entry.id, "done")
        return entry

    def _apply(self, name: str, entry: AuditEntry) -> None:
        for version, tags in entry.version_tags.items():
            for key, value in tags.items():
                self.client.set_model_version_tag(name, version, key, value)
        for alias, (_, to) in entry.moves.items():
            self._move(name, alias, to)

    def _reconcile(self, name: str) -> list[AuditEntry]:
        """Finish what a crashed gate or rollback began (its intent is recorded: redo the tags
        and the moves still at their `from`), then check every alias against the record."""
        repaired = []
        aliases = self._aliases(name)
        for entry in self.audit(name):
            if entry.outcome is not None:
                continue
            for alias, (before, to) in entry.moves.items():
                if aliases.get(alias) not in (before, to):
                    raise RegistryDiverged(
                        f"{name}: audit entry {entry.id} ({entry.action} v{entry.version}) moves "
                        f"{alias} from {before} to {to}, but it points at {aliases.get(alias)}"
                    )
            self._apply(name, entry)
            self._close(name, entry.id, "repaired")
            repaired.append(entry)
            aliases = self._aliases(name)
        entries = self.audit(name)
        if not entries and aliases:
            moves = {alias: (None, version) for alias, version in sorted(aliases.items())}
            self._commit(name, "adopt", "", moves, {}, "aliases set before the audit record", "")
            return repaired
        expected: dict[str, str | None] = {}
        for entry in entries:
            for alias, (_, to) in entry.moves.items():
                expected[alias] = to
        for alias, version in expected.items():
            if aliases.get(alias) != version:
                raise RegistryDiverged(
                    f"{name}: alias {alias} points at {aliases.get(alias)}, but the audit record "
                    f"(last entry {entries[-1].id}) says {version}: it was moved outside the "
                    "promotion gate and the rollback; set it back before the next move"
                )
        return repaired

    def reconcile(self, name: str) -> list[AuditEntry]:
        """Repair what a crash between an alias move and its audit outcome left; the entries
        repaired. Every gate and rollback does this first."""
        if not self._model_exists(name):
            return []
        with self._alias_lock(name):
            return self._reconcile(name)

    # --- moving aliases (the gate and the rollback only) --------------------------------

    def record_decision(
        self,
        name: str,
        version: str,
        decision: str,
        reason: str,
        score: float | None,
        test_version: str,
        expected_champion: str | None,
        via: str = "",
    ) -> AuditEntry:
        """Record the gate's `decision` (champion, challenger or rejected) with its own score
        and reason on the version and move the aliases, all as one audited operation. Refused
        (AliasMoved) when `champion` is no longer `expected_champion`, the version it was
        decided against; AlreadyDecided when another gate run decided the version first."""
        if decision not in (CHAMPION, CHALLENGER, REJECTED):
            raise ValueError(f"decision must be {CHAMPION}, {CHALLENGER} or {REJECTED}")
        with self._alias_lock(name):
            self._reconcile(name)
            current = self.version(name, version)
            if current.tags.get(REGISTRATION) != "complete":
                raise RegistrationFailed(f"{name} v{version} is not a complete registration")
            if GATE_DECISION in current.tags:
                raise AlreadyDecided(
                    f"{name} v{version} was already decided: {current.tags[GATE_DECISION]}"
                )
            aliases = self._aliases(name)
            if aliases.get(CHAMPION) != expected_champion:
                raise AliasMoved(
                    f"{name}: champion is v{aliases.get(CHAMPION)}, not v{expected_champion} "
                    f"as when v{version} was decided"
                )
            moves: dict[str, tuple[str | None, str | None]] = {}
            if decision == CHAMPION:
                moves[CHAMPION] = (expected_champion, version)
                if aliases.get(CHALLENGER) == version:
                    moves[CHALLENGER] = (version, None)
            elif decision == CHALLENGER:
                moves[CHALLENGER] = (aliases.get(CHALLENGER), version)
            tags = {
                GATE_DECISION: decision,
                GATE_REASON: reason[:AUDIT_WHY_MAX_CHARS],
                GATE_SCORE: "" if score is None else f"{score:.6f}",
                GATE_TEST_VERSION: test_version,
                "gate_decided_at": _now(),
            }
            action = {CHAMPION: "promote", CHALLENGER: "challenger", REJECTED: "reject"}
            return self._commit(
                name, action[decision], version, moves, {version: tags}, reason, via
            )

    def rollback(self, name: str, reason: str, via: str = "") -> tuple[str, str]:
        """Move `champion` back to the version that held it before; (from, to)."""
        with self._alias_lock(name):
            if self._model_exists(name):
                self._reconcile(name)
            history = self.champion_history(name)
            champion = self.champion(name)
            if champion is None or len(history) < 2:
                raise ValueError(f"{name} has no earlier champion to roll back to")
            rolled_back, restored = history[-1], history[-2]
            tags = {"rolled_back_at": _now(), "rollback_reason": reason}
            self._commit(
                name,
                "rollback",
                rolled_back,
                {CHAMPION: (champion.version, restored)},
                {rolled_back: tags},
                reason,
                via,
            )
            return rolled_back, restored

    def pin_champion(
        self, name: str, version: str, reason: str, actor: str, via: str = ""
    ) -> tuple[str | None, str]:
        """A person's choice: `champion` := `version` (a complete registration), with who and
        why in the audit record; (from, to). A pinned challenger stops being the challenger."""
        if not actor.strip() or not reason.strip():
            raise ValueError("a pin names the person who made it (actor) and why (reason)")
        with self._alias_lock(name):
            self._reconcile(name)
            target = self.version(name, version)
            if target.tags.get(REGISTRATION) != "complete":
                raise RegistrationFailed(f"{name} v{version} is not a complete registration")
            aliases = self._aliases(name)
            moves: dict[str, tuple[str | None, str | None]] = {
                CHAMPION: (aliases.get(CHAMPION), version)
            }
            if aliases.get(CHALLENGER) == version:
                moves[CHALLENGER] = (version, None)
            tags = {"pinned_at": _now(), "pinned_by": actor, "pin_reason": reason}
            self._commit(name, "pin", version, moves, {version: tags}, reason, via, who=actor)
            return aliases.get(CHAMPION), version

    def promote_challenger(
        self, name: str, version: str, reason: str, expected_champion: str, via: str = ""
    ) -> AuditEntry:
        """The end of a staged release: the challenger `version` becomes `champion`, refused
        (AliasMoved) if either alias moved since the release decided it."""
        with self._alias_lock(name):
            self._reconcile(name)
            aliases = self._aliases(name)
            if aliases.get(CHALLENGER) != version or aliases.get(CHAMPION) != expected_champion:
                raise AliasMoved(
                    f"{name}: champion v{aliases.get(CHAMPION)}, challenger "
                    f"v{aliases.get(CHALLENGER)}; the release decided on champion "
                    f"v{expected_champion}, challenger v{version}"
                )
            moves = {CHAMPION: (expected_champion, version), CHALLENGER: (version, None)}
            tags = {"released_at": _now(), "release_reason": reason[:AUDIT_WHY_MAX_CHARS]}
            return self._commit(name, "release", version, moves, {version: tags}, reason, via)

    def withdraw_challenger(
        self, name: str, version: str, reason: str, via: str = ""
    ) -> AuditEntry | None:
        """A breach in shadow or canary: the `challenger` alias is taken from `version`, with
        the reason on the version and in the audit record (None: it no longer held it)."""
        with self._alias_lock(name):
            self._reconcile(name)
            if self._aliases(name).get(CHALLENGER) != version:
                return None
            tags = {"withdrawn_at": _now(), "withdraw_reason": reason[:AUDIT_WHY_MAX_CHARS]}
            return self._commit(
                name,
                "withdraw",
                version,
                {CHALLENGER: (version, None)},
                {version: tags},
                reason,
                via,
            )
