"""CurveZMQ for every socket: keys from configuration, a ZAP authenticator per key set.

With security configured, each bound socket is a CURVE server holding this process's secret
key and each connecting socket a CURVE client that must know the server's public key (the
registry hands out every endpoint's key). A ZAP handler admits only clients whose public key
is in the ``authorized_keys`` directory, so an unauthenticated peer can neither register,
subscribe, nor get a socket of the graph to accept its messages.
"""

from __future__ import annotations

import threading
from pathlib import Path

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator

from ark.config import SecurityConfig
from ark.errors import ConfigError

_lock = threading.Lock()
_contexts: dict[tuple, tuple[zmq.Context, ThreadAuthenticator]] = {}


def _load(path: Path, want_secret: bool) -> tuple[bytes, bytes | None]:
    try:
        public, secret = zmq.auth.load_certificate(str(path))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"security: cannot load certificate {path} ({exc})") from None
    if want_secret and not secret:
        raise ConfigError(f"security: {path} holds no secret key (use the .key_secret file)")
    return public, secret


class Security:
    """Applies a SecurityConfig (or nothing, when it is None) to sockets."""

    def __init__(self, cfg: SecurityConfig | None) -> None:
        self.cfg = cfg
        self.public_key: bytes | None = None
        self.secret_key: bytes | None = None
        self.registry_key: bytes | None = None
        if cfg is None:
            self.context = zmq.Context.instance()
            return
        if not Path(cfg.authorized_keys).is_dir():
            raise ConfigError(f"security: authorized_keys {cfg.authorized_keys} is not a directory")
        self.public_key, self.secret_key = _load(Path(cfg.secret_key), want_secret=True)
        self.registry_key = _load(Path(cfg.registry_key), False)[0] if cfg.registry_key else self.public_key
        key = (str(Path(cfg.authorized_keys).resolve()),)
        with _lock:
            if key not in _contexts:
                # A context of its own, so the authenticator never judges the sockets of an
                # unsecured graph that lives in the same process (tests, tools).
                ctx = zmq.Context()
                auth = ThreadAuthenticator(ctx)
                auth.start()
                auth.configure_curve(domain="*", location=key[0])
                _contexts[key] = (ctx, auth)
            self.context = _contexts[key][0]

    @property
    def enabled(self) -> bool:
        return self.cfg is not None

    def server(self, sock: zmq.Socket) -> None:
        """Make ``sock`` (about to bind) a CURVE server, if security is on."""
        if self.cfg is not None:
            sock.curve_secretkey = self.secret_key
            sock.curve_publickey = self.public_key
            sock.curve_server = True

    def client(self, sock: zmq.Socket, server_key: bytes | str | None) -> None:
        """Make ``sock`` a CURVE client of a server with ``server_key`` before its next connect."""
        if self.cfg is not None:
            if not server_key:
                raise ConfigError("security: a peer advertised no public key; it is not part of the secured graph")
            sock.curve_secretkey = self.secret_key
            sock.curve_publickey = self.public_key
            sock.curve_serverkey = server_key.encode() if isinstance(server_key, str) else server_key


def generate_keys(directory: str | Path, name: str) -> tuple[Path, Path]:
    """Write a keypair ``name.key`` / ``name.key_secret`` into ``directory``; returns both paths."""
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    public, secret = zmq.auth.create_certificates(str(d), name)
    return Path(public), Path(secret)
