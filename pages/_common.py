"""Helpers shared by the pages: settings, the cached lake handle, and who is signed in (not a page itself).

With auth on (``[auth] mode = "tokens"``) ``app.py`` lets nobody past ``sign_in()``: a token
login form, or Streamlit's OIDC login (``st.login``) when ``[auth] ui = "oidc"``. The principal
lives in the session; pages show an action only when ``can(...)`` says its principal may take it,
and run it inside ``acting()`` so ``core.flows`` checks and records that principal.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Iterator
from pathlib import Path

import streamlit as st

from core import auth
from core.auth import Principal
from core.config import Settings, load_settings
from core.errors import AuthError
from core.lake import Lake

_KEY = "lakeops_principal"


@functools.lru_cache(maxsize=8)
def _load(_env: tuple[tuple[str, str], ...], _cwd: str, _config_stamp: tuple[str, int] | None) -> Settings:
    return load_settings()


def _loaded() -> Settings:
    """The UI's one settings resolver (environment + lakeops.toml), read again only when either changes.

    The pages get their ``Settings`` and ``Lake`` from here and pass them to ``core`` explicitly.
    """
    path = Path(os.environ.get("LAKEOPS_CONFIG") or "lakeops.toml")
    try:
        stamp: tuple[str, int] | None = (str(path.resolve()), path.stat().st_mtime_ns)
    except OSError:
        stamp = None
    return _load(tuple(sorted(os.environ.items())), str(Path.cwd()), stamp)


def settings() -> Settings:
    """The settings of this UI process (environment + lakeops.toml, see ``_loaded``).

    With auth on, the actor is the signed-in principal (never a name typed into a form).
    """
    s = _loaded()
    who = principal()
    if who is not None and auth.enabled(s):
        s = s.with_(actor=who.name)
    return s


@st.cache_resource
def _lake(uri: str, storage_options_json: str) -> Lake:
    return Lake(uri, json.loads(storage_options_json))


def lake() -> Lake:
    """The lake this UI reads: one handle per lake URI; each query opens its own snapshot."""
    s = _loaded()
    return _lake(s.lake_uri, json.dumps(dict(s.storage_options), sort_keys=True))


# ---------------------------------------------------------------- who is signed in
def auth_on() -> bool:
    """Whether this UI requires a login."""
    return auth.enabled(_loaded())


def principal() -> Principal | None:
    """The signed-in principal of this session (None with auth off or before login)."""
    return st.session_state.get(_KEY)


@contextlib.contextmanager
def acting() -> Iterator[Principal | None]:
    """Run an action as the signed-in principal (``core.flows`` checks and records it)."""
    with auth.acting_as(principal()):
        yield principal()


def can(action: str, model: str | None = None) -> bool:
    """Whether the session may take ``action``: a registry action on ``model`` (by its policy), or
    ``"admin"`` for the rest (checks, alert handling, running jobs). Always True with auth off."""
    if not auth_on():
        return True
    who = principal()
    if who is None:
        return False
    if model is None:
        return who.allows(action)
    return action in _allowed(model)


def _allowed(model: str) -> frozenset[str]:
    from core.flows.promote import allowed_actions

    with acting():
        return allowed_actions(model, settings=_loaded(), lake=lake())


def who_acts() -> str:
    """The name recorded as the actor of this session's actions."""
    return settings().actor


@st.cache_resource
def _tokens(uri: str) -> auth.TokenStore:
    return auth.TokenStore(lake())


def _still_valid(who: Principal) -> bool:
    """A token principal stays signed in only while its token is active (revocation, expiry)."""
    if who.kind != "token":
        return True
    store = _tokens(lake().uri)
    try:
        store.refresh()
    except Exception:  # noqa: BLE001 - the lake is down: keep the session, actions will say what fails
        return True
    return who.token_id in store.active_ids()


def sign_in() -> Principal | None:
    """Gate the app: with auth on, show the login and stop the script until someone signs in."""
    if not auth_on():
        return None
    config = auth.auth_config(_loaded())
    who = principal()
    if who is not None and not _still_valid(who):
        st.session_state.pop(_KEY, None)
        st.warning("Your token was revoked or has expired: sign in again.", icon=":material/lock:")
        who = None
    if who is None and config.ui == "oidc":
        who = _oidc(config)
    if who is None:
        _token_form()
        st.stop()
    return who


def _oidc(config: auth.AuthConfig) -> Principal | None:
    user = st.user
    if not user.is_logged_in:
        st.title("lakeops")
        st.write("Sign in with your organisation's account to continue.")
        if st.button("Sign in", type="primary", key="oidc_login"):
            st.login()
        st.stop()
    try:
        who = auth.oidc_principal(config, user.get("email"), user.get("name"))
    except AuthError as exc:
        st.error(str(exc), icon=":material/lock:")
        if st.button("Sign out", key="oidc_logout"):
            st.logout()
        st.stop()
    st.session_state[_KEY] = who
    return who


def _token_form() -> None:
    st.title("lakeops")
    st.write("Sign in with your lakeops token (an admin creates one with `lakeops tokens create NAME --scope read`).")
    with st.form("login"):
        token = st.text_input("Token", type="password", key="login_token")
        submitted = st.form_submit_button("Sign in", type="primary")
    if submitted:
        try:
            who = auth.authenticate(token, lake=lake())
        except AuthError as exc:
            st.error(str(exc), icon=":material/lock:")  # never the token itself (core.auth's messages)
        else:
            st.session_state[_KEY] = who
            st.session_state.pop("login_token", None)
            st.rerun()


def signed_in_line() -> None:
    """``Signed in as alice (read)`` with a sign-out button, in the sidebar (nothing with auth off)."""
    who = principal()
    if who is None:
        return
    with st.sidebar:
        st.caption(f"Signed in as **{who.name}** ({', '.join(sorted(who.scopes)) or 'no scope'}"
                   f"{'; roles ' + ', '.join(sorted(who.roles)) if who.roles else ''})")
        if st.button("Sign out", key="sign_out"):
            st.session_state.pop(_KEY, None)
            if who.kind == "oidc":
                st.logout()
            st.rerun()


def read_only_note() -> None:
    """Say why there are no action buttons (a principal that may take none of them)."""
    who = principal()
    if who is not None:
        st.caption(f"Signed in as {who.name}: you may look, not act here.")
