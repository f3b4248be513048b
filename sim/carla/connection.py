"""Connecting to a CARLA server: timeouts, retries with backoff, and a clear error.

The Leaderboard builds `carla.Client(host, port)` and calls `client.set_timeout(10 s)`
(`LeaderboardEvaluator.client_timeout`); a missing server then surfaces as a bare
`RuntimeError: time-out of 10000ms ...` on the first call. Here every attempt is checked
with `client.get_server_version()`, retried with exponential backoff, and the final error
names `host:port`, the attempts made and how to start a server.

Before a `carla.Client` is created, a raw-socket pre-flight (`probe_rpc`) sends the
msgpack-rpc request CARLA's RPC server answers (`version`, no arguments) and reads the
first bytes of the reply. This matters because libcarla's RPC thread calls
`std::terminate` on a reply it cannot decode (observed with carla 0.9.16: a client
pointed at an HTTP endpoint aborts the whole Python process with
`clmdep_msgpack::v1::type_error`). The probe is conservative: it only *rejects* a port
when the connection is refused or a reply arrives that is not a msgpack-rpc response;
silence is left for the real client (and its timeout) to judge.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 10.0  # [s] the Leaderboard's `client_timeout`
DEFAULT_ATTEMPTS = 3  # connection attempts in total
DEFAULT_BACKOFF_S = 1.0  # [s] wait before the 2nd attempt; doubles each time
MAX_BACKOFF_S = 8.0  # [s] cap of one wait between attempts
PROBE_MAX_WAIT_S = 2.0  # [s] the pre-flight never waits longer than this for a reply

# msgpack-rpc request [type=0 (request), msgid=1, method="version", params=[]]:
# fixarray(4), fixint 0, fixint 1, fixstr(7) "version", fixarray(0).
_VERSION_REQUEST = b"\x94\x00\x01\xa7version\x90"
# Every msgpack-rpc response starts with fixarray(4) and fixint 1 (type = response).
_RESPONSE_PREFIX = b"\x94\x01"


class CarlaConnectionError(ConnectionError):
    """No usable CARLA server at the given address; the message names `host:port`."""


@dataclass(frozen=True)
class ProbeResult:
    """What a raw TCP pre-flight found at `host:port`.

    `rpc`: a msgpack-rpc response came back (a CARLA server, very likely);
    `silent`: the port accepted the connection but sent nothing in time (undecided);
    `unreachable`: refused, unroutable or the host name does not resolve;
    `foreign`: something answered, but not with msgpack-rpc (not a CARLA RPC port).
    """

    status: Literal["rpc", "silent", "unreachable", "foreign"]
    detail: str = ""


def probe_rpc(host: str, port: int, timeout_s: float) -> ProbeResult:
    """Send CARLA's `version` RPC over a plain socket and classify the first reply bytes."""
    wait_s = max(min(timeout_s, PROBE_MAX_WAIT_S), 0.05)
    try:
        sock = socket.create_connection((host, port), timeout=wait_s)
    except socket.gaierror as exc:
        return ProbeResult("unreachable", f"cannot resolve host {host!r} ({exc})")
    except OSError as exc:  # refused, unreachable, timed out
        return ProbeResult("unreachable", f"{type(exc).__name__}: {exc}")
    with sock:
        try:
            sock.sendall(_VERSION_REQUEST)
            reply = b""
            deadline = time.monotonic() + wait_s
            while len(reply) < len(_RESPONSE_PREFIX) and time.monotonic() < deadline:
                sock.settimeout(max(deadline - time.monotonic(), 0.01))
                chunk = sock.recv(64)
                if not chunk:
                    break  # closed by the peer
                reply += chunk
        except TimeoutError:
            pass
        except OSError as exc:
            return ProbeResult("silent", f"{type(exc).__name__}: {exc}")
    if reply.startswith(_RESPONSE_PREFIX):
        return ProbeResult("rpc")
    if _RESPONSE_PREFIX.startswith(reply):  # nothing, or too little to judge
        return ProbeResult("silent", "no complete reply to the version request")
    return ProbeResult("foreign", f"the reply starts with {reply[:16]!r}")


def _default_client_factory(host: str, port: int) -> Any:
    from sim.carla_compat import require_carla

    return require_carla().Client(host, port)


def connect(
    host: str,
    port: int,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    attempts: int = DEFAULT_ATTEMPTS,
    backoff_s: float = DEFAULT_BACKOFF_S,
    *,
    client_factory: Callable[[str, int], Any] | None = None,
    probe: Callable[[str, int, float], ProbeResult] | None = probe_rpc,
    sleep: Callable[[float], None] = time.sleep,
) -> Any:
    """A `carla.Client` connected to `host:port`, its timeout set to `timeout_s`.

    Makes up to `attempts` attempts, waiting `backoff_s`, `2 * backoff_s`, ... (capped at
    MAX_BACKOFF_S) between them, and raises CarlaConnectionError naming `host:port` when
    none succeeds. `client_factory` builds the client (default `carla.Client`); `probe`
    is the raw-socket pre-flight (None skips it).
    """
    if attempts < 1:
        raise ValueError(f"`attempts` must be >= 1, got {attempts}")
    if not timeout_s > 0.0:
        raise ValueError(f"`timeout_s` must be > 0, got {timeout_s}")
    factory = client_factory or _default_client_factory
    address = f"{host}:{port}"
    reason = "no attempt made"
    for attempt in range(1, attempts + 1):
        if attempt > 1:
            wait = min(backoff_s * 2 ** (attempt - 2), MAX_BACKOFF_S)
            log.info("retrying %s in %.1f s (attempt %d/%d)", address, wait, attempt, attempts)
            sleep(wait)
        if probe is not None:
            found = probe(host, port, timeout_s)
            if found.status == "foreign":
                raise CarlaConnectionError(
                    f"something answered at {address}, but not CARLA's RPC protocol "
                    f"({found.detail}); is {port} the CARLA server's RPC port "
                    "(-carla-rpc-port, default 2000)?"
                )
            if found.status == "unreachable":
                reason = found.detail
                continue
        try:
            client = factory(host, port)
            client.set_timeout(timeout_s)
            server_version = client.get_server_version()
        except RuntimeError as exc:  # libcarla reports time-outs as RuntimeError
            reason = str(exc)
            continue
        _warn_on_version_mismatch(client, server_version, address)
        return client
    raise CarlaConnectionError(
        f"no CARLA server answered at {address} after {attempts} attempt(s) "
        f"({timeout_s:g} s timeout each; last error: {reason}). Start one, e.g. "
        f"`./CarlaUE4.sh -RenderOffScreen -carla-rpc-port={port}`, or pass --host/--port."
    )


def _warn_on_version_mismatch(client: Any, server_version: str, address: str) -> None:
    try:
        client_version = str(client.get_client_version())
    except Exception:  # a client without the call: nothing to compare
        return
    if client_version != str(server_version):
        log.warning(
            "CARLA client %s and server %s at %s differ; the API may not match",
            client_version,
            server_version,
            address,
        )
