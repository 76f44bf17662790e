"""The model registry: versions with sha256-checked artifacts, aliases, statuses and an audit trail.

Two append-only tables hold everything (``core.catalog``):

* ``model_versions``: one row per version *claim*. A version number is claimed by appending a
  row with ``max(version) + 1``; the claim whose Delta commit came first wins (the claimant
  checks the table as it was just before its own commit and retries with the next number if
  that number was already taken). Only the winner copies the artifact and writes the
  ``register`` event, whose ``event_id`` is the claim's ``registration_id``; a claim without
  that event (a lost race, or a crash mid-registration) is not a version.
* ``registry_events``: register, gate, approve, reject, archive, promote, rollback, alias,
  unalias. Each carries actor, reason, time and a JSON report. The alias map, every version's
  status (candidate, approved, rejected, champion, archived) and the deployment history are
  derived by replaying the events in order of ``(at, event_id)``.

Concurrency: an alias event may carry ``expected`` (the holder its writer saw). On replay an
event whose expectation no longer holds is *superseded* and changes nothing, so two processes
moving ``champion`` at the same moment give the result of one serial order, and both events
stay in the history. ``set_alias`` re-reads after its commit and reports whether it applied.

Modules: ``_base`` (names, ``ModelVersion``, lookups), ``_events`` (events and replay),
``_versions`` (claims, registration, listing, sha256-checked loading).
"""

from core.registry._base import ModelVersion, artifact_path, get_version
from core.registry._events import (
    ALIAS_ACTIONS,
    STAGE_MODES,
    AliasChange,
    RegistryState,
    Stage,
    alias_at,
    aliases,
    champion_version,
    events,
    history,
    record_event,
    set_alias,
    state,
    statuses,
)
from core.registry._versions import (
    LoadedModel,
    _register_files,  # noqa: F401 - registers bytes without a run (tests)
    list_models,
    load,
    register,
    resolve_version,
    versions,
)

__all__ = [
    "ALIAS_ACTIONS",
    "STAGE_MODES",
    "Stage",
    "AliasChange",
    "LoadedModel",
    "ModelVersion",
    "RegistryState",
    "alias_at",
    "aliases",
    "artifact_path",
    "champion_version",
    "events",
    "get_version",
    "history",
    "list_models",
    "load",
    "record_event",
    "register",
    "resolve_version",
    "set_alias",
    "state",
    "statuses",
    "versions",
]
