"""A private Dovecot IMAP server on loopback, for tests that talk to a real mailbox.

In: nothing but the ``dovecot`` binary (Debian package ``dovecot-imapd``).
Out: a running server with one user (``intake`` / ``secret``), the folders ``INBOX``
and ``Processed``, and helpers to append and read mail over IMAP. Optionally TLS from
the tests' CA (``tls=tls_files``: imaps and STARTTLS, nothing in the clear) and OAuth2
bearer tokens checked against a local introspection URL (``oauth2_introspection_url=``).

Each server writes its own configuration under a fresh temp folder and runs in the
foreground (``dovecot -F``) as a child of the test process, so stopping it is a plain
``terminate()`` + ``wait()``. Running as root, the login processes use ``dovenull`` and
the mail belongs to ``dovecot`` (Dovecot refuses root for both); run as another user,
everything runs as that user.
"""

from __future__ import annotations

import grp
import os
import pwd
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest
from imapclient import IMAPClient

from .net import LOOPBACK, free_port, port_accepts, wait_until
from .tls import TlsFiles, client_context

#: What Dovecot 2.3.19 announces after LOGIN with the built-in default, in its order.
#: ``capabilities_without`` removes names from this list; test_servers.py checks that
#: it still matches a default server, so a Dovecot upgrade shows up as a failing test.
_DEFAULT_CAPABILITY_LINE = (
    "IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE SORT SORT=DISPLAY THREAD=REFERENCES"
    " THREAD=REFS THREAD=ORDEREDSUBJECT MULTIAPPEND URL-PARTIAL CATENATE UNSELECT CHILDREN"
    " NAMESPACE UIDPLUS LIST-EXTENDED I18NLEVEL=1 CONDSTORE QRESYNC ESEARCH ESORT SEARCHRES"
    " WITHIN CONTEXT=SEARCH LIST-STATUS BINARY MOVE SNIPPET=FUZZY PREVIEW=FUZZY PREVIEW"
    " STATUS=SIZE SAVEDATE LITERAL+ NOTIFY SPECIAL-USE"
)
DEFAULT_CAPABILITIES: tuple[str, ...] = tuple(_DEFAULT_CAPABILITY_LINE.split())

#: The folders every server has; ``clear()`` empties them and deletes any other.
FOLDERS = ("INBOX", "Processed")

CONFIG = """\
# Private Dovecot for the report-intake tests, written by tests/servers/dovecot.py.
base_dir = {base}/run
state_dir = {base}/state
log_path = {base}/dovecot.log
instance_name = intake-test-{port}
protocols = imap
listen = {host}
{ssl}
disable_plaintext_auth = no
auth_mechanisms = {auth_mechanisms}
auth_verbose = yes
auth_failure_delay = 0
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
first_valid_uid = 1
mail_location = maildir:~/Maildir
mail_fsync = never
{capability_line}
passdb {{
  driver = passwd-file
  mechanisms = plain login
  args = scheme=PLAIN username_format=%u {base}/passwd
}}
{oauth2_passdb}# allow_all_users: doveadm's user lookups (the password passdb serves PLAIN/LOGIN only)
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={base}/mail/%u allow_all_users=yes
}}
namespace inbox {{
  inbox = yes
  mailbox Processed {{
    auto = create
  }}
}}
service anvil {{
  # no growing delay after failed logins (tests try wrong passwords)
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
service imap-login {{
  inet_listener imap {{
    port = {port}
  }}
  inet_listener imaps {{
    port = {imaps_port}
  }}
}}
{unprivileged}"""

#: With ``tls``: STARTTLS on the imap port, implicit TLS on imaps, no sign-in without TLS
#: (except from loopback to loopback, which Dovecot counts as secured). The ``<`` makes
#: Dovecot's master (root, when the tests are) read the files.
SSL_REQUIRED = """\
ssl = required
ssl_cert = <{cert}
ssl_key = <{key}"""

#: With ``oauth2_introspection_url``: XOAUTH2 and OAUTHBEARER checked by introspection.
OAUTH2_PASSDB = """\
passdb {{
  driver = oauth2
  mechanisms = xoauth2 oauthbearer
  args = {conf}
}}
"""

#: The oauth2 passdb's own file (``dovecot-oauth2.conf.ext``).
OAUTH2_CONF = """\
introspection_url = {url}
introspection_mode = post
username_attribute = username
active_attribute = active
active_value = true
{tls_line}"""

#: Added when the tests do not run as root: chroot needs root.
UNPRIVILEGED = """\
service imap-login {
  chroot =
}
service anvil {
  chroot =
}
"""


#: ``imap-login: Info: Login: user=<intake>, method=XOAUTH2, rip=…, lip=…, mpid=…, TLS, …``
#: (``TLS`` only when the session was encrypted; a loopback plain session says ``secured``).
_LOGIN_LINE = re.compile(
    r"imap-login: Info: Login: user=<(?P<user>[^>]*)>, method=(?P<method>[A-Z0-9-]+),"
    r"[^\n]*?(?P<tls>, TLS)?(?:, session=|$)",
    re.MULTILINE,
)


@dataclass(frozen=True)
class Login:
    """One sign-in from the server's log: who, with which SASL mechanism, over TLS or not."""

    user: str
    method: str
    tls: bool


class DovecotError(RuntimeError):
    """The test Dovecot could not be configured, started or stopped."""


class Dovecot:
    """One private Dovecot instance; see the module docstring.

    ``capabilities_without`` names capabilities (e.g. ``{"MOVE", "UIDPLUS"}``) that the
    server must not announce, to test clients against a poorer server. With ``tls`` the
    server requires TLS: implicit on ``imaps_port``, STARTTLS on ``port``; the helpers
    (``client()`` …) then use imaps trusting ``tls.ca_cert``. With
    ``oauth2_introspection_url`` it also takes XOAUTH2 and OAUTHBEARER, whose bearer tokens
    it checks by POSTing them to that URL (RFC 7662; the answer's ``username`` must be the
    user signing in; an https URL is verified against ``tls.ca_cert``); PLAIN and LOGIN keep
    using the password. ``logins()`` reads who signed in how from the log. Dovecot counts a
    loopback-to-loopback session as secured, so with ``tls`` it still takes a password
    without STARTTLS from 127.0.0.1: check ``Login.tls`` to see that TLS was used.
    """

    def __init__(
        self,
        *,
        capabilities_without: Iterable[str] = (),
        username: str = "intake",
        password: str = "secret",
        base: Path | None = None,
        tls: TlsFiles | None = None,
        oauth2_introspection_url: str | None = None,
    ) -> None:
        without = {name.upper() for name in capabilities_without}
        unknown = without - {name.upper() for name in DEFAULT_CAPABILITIES}
        if unknown:
            raise ValueError(
                f"capabilities_without names {sorted(unknown)}, which Dovecot does not "
                f"announce anyway; known: {' '.join(DEFAULT_CAPABILITIES)}"
            )
        self.capabilities_without = frozenset(without)
        self.tls = tls
        self.oauth2_introspection_url = oauth2_introspection_url
        self._username = username
        self._password = password
        self._owns_base = base is None
        self.base = Path(base or tempfile.mkdtemp(prefix="intake-dovecot-"))
        self._port = 0
        self._imaps_port = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_offset = 0

    # -- identity -------------------------------------------------------------------

    @property
    def host(self) -> str:
        return LOOPBACK

    @property
    def port(self) -> int:
        """The IMAP port; chosen on the first ``start()`` and kept across restarts."""
        if not self._port:
            raise DovecotError("The test Dovecot has no port yet: call start() first.")
        return self._port

    @property
    def imaps_port(self) -> int:
        """The implicit-TLS port (only with ``tls``); kept across restarts like ``port``."""
        if self.tls is None:
            raise DovecotError("This test Dovecot has no imaps port: make it with tls=.")
        if not self._imaps_port:
            raise DovecotError("The test Dovecot has no port yet: call start() first.")
        return self._imaps_port

    @property
    def username(self) -> str:
        return self._username

    @property
    def password(self) -> str:
        return self._password

    @property
    def conf_path(self) -> Path:
        return self.base / "dovecot.conf"

    @property
    def log_path(self) -> Path:
        return self.base / "dovecot.log"

    @property
    def maildir(self) -> Path:
        """The user's Maildir on disk (``cur``/``new`` of INBOX, ``.Processed`` …)."""
        return self.base / "mail" / self.username / "Maildir"

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log(self) -> str:
        """The server's log so far (empty when it has none yet)."""
        with suppress(FileNotFoundError):
            return self.log_path.read_text(errors="replace")
        return ""

    def logins(self) -> list[Login]:
        """Every successful sign-in in the log so far, oldest first (the fixture's own
        readiness check and helpers sign in too: compare the newest ones)."""
        return [
            Login(match["user"], match["method"], match["tls"] is not None)
            for match in _LOGIN_LINE.finditer(self.log())
        ]

    # -- lifecycle ------------------------------------------------------------------

    def start(self, timeout: float = 10.0) -> None:
        """Write the configuration, start the server and wait until a LOGIN works."""
        if self.running:
            return
        if shutil.which("dovecot") is None:
            raise DovecotError(
                "The dovecot binary is not installed: run tests/run.sh as root, which "
                "installs the Debian package dovecot-imapd, or apt-get install it."
            )
        keep_port = bool(self._port)
        for attempt in range(3):
            if not keep_port:
                self._port = free_port()
                self._imaps_port = free_port() if self.tls else 0
            self._write_config()
            self._remove_stale_pid()
            self._spawn()
            if self._wait_ready(timeout):
                return
            port_taken = "Address already in use" in self.log()[self._log_offset :]
            self.stop()
            if keep_port or not port_taken or attempt == 2:
                break
        raise DovecotError(
            f"The test Dovecot in {self.base} did not accept an IMAP login on port "
            f"{self._port} within {timeout} s. Its log ends with:\n{self.log()[-2000:]}"
        )

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server (SIGTERM to its processes, SIGKILL if they linger) and wait."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        # The master leads its own process group (start_new_session): signalling the
        # group stops every child at once. Now and then the master still waits its full
        # second for a child; past a short grace the group gets SIGKILL instead.
        for sig, grace in ((signal.SIGTERM, 0.3), (signal.SIGKILL, timeout)):
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, sig)
            with suppress(subprocess.TimeoutExpired):
                proc.wait(grace)
                break
        if proc.poll() is None:
            raise DovecotError(f"The test Dovecot (pid {proc.pid}) did not exit.")
        if not wait_until(lambda: not port_accepts(self.host, self._port), timeout):
            raise DovecotError(f"The test Dovecot on port {self._port} kept listening.")

    def kill(self) -> None:
        """Crash the server: SIGKILL to all its processes, leaving a stale master.pid."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def restart(self) -> None:
        """Stop and start again on the same port; mail on disk is kept."""
        self.stop()
        self.start()

    def close(self) -> None:
        """Stop the server and delete its folder (when this object made it)."""
        self.stop()
        if self._owns_base:
            shutil.rmtree(self.base, ignore_errors=True)

    def __enter__(self) -> Dovecot:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    # -- IMAP helpers ---------------------------------------------------------------

    @contextmanager
    def client(self, timeout: float = 10.0) -> Iterator[IMAPClient]:
        """A logged-in IMAPClient (over imaps with ``tls``), logged out afterwards."""
        if self.tls is None:
            imap = IMAPClient(self.host, self.port, ssl=False, timeout=timeout)
        else:
            context = client_context(self.tls.ca_cert)
            imap = IMAPClient(
                self.host, self.imaps_port, ssl=True, ssl_context=context, timeout=timeout
            )
        try:
            imap.login(self.username, self.password)
            yield imap
        finally:
            try:
                imap.logout()
            except Exception:
                imap.shutdown()

    def capabilities(self) -> set[str]:
        """The capabilities announced after LOGIN, upper-case."""
        with self.client() as imap:
            return {name.decode().upper() for name in imap.capabilities()}

    def append(
        self, raw: bytes, folder: str = "INBOX", flags: Iterable[bytes | str] = ()
    ) -> int | None:
        """APPEND ``raw`` to ``folder``; return its UID (from APPENDUID) when given."""
        with self.client() as imap:
            answer = imap.append(folder, raw, flags=tuple(flags))
        match = re.search(rb"APPENDUID \d+ (\d+)", answer or b"")
        return int(match.group(1)) if match else None

    def uids(self, folder: str = "INBOX") -> list[int]:
        """The UIDs in ``folder``, ascending."""
        with self.client() as imap:
            imap.select_folder(folder, readonly=True)
            return sorted(imap.search("ALL"))

    def fetch_all(self, folder: str = "INBOX") -> list[bytes]:
        """The raw messages in ``folder`` in UID order (without setting \\Seen)."""
        with self.client() as imap:
            imap.select_folder(folder, readonly=True)
            uids = sorted(imap.search("ALL"))
            if not uids:
                return []
            fetched = imap.fetch(uids, ["BODY.PEEK[]"])
            return [fetched[uid][b"BODY[]"] for uid in uids]

    def folders(self) -> list[str]:
        with self.client() as imap:
            return [name for _flags, _delim, name in imap.list_folders()]

    def clear(self) -> None:
        """Empty INBOX and Processed and delete every other folder.

        UIDs keep growing across tests (UIDVALIDITY stays): tests must not expect 1.
        """
        with self.client() as imap:
            names = [name for _flags, _delim, name in imap.list_folders()]
            for name in sorted(set(names) - set(FOLDERS), key=len, reverse=True):
                imap.delete_folder(name)
            for name in FOLDERS:
                imap.select_folder(name)
                uids = imap.search("ALL")
                if uids:
                    imap.delete_messages(uids)
                    imap.expunge()
                imap.unselect_folder()

    # -- internals ------------------------------------------------------------------

    def _write_config(self) -> None:
        for sub in ("run", "state", "mail"):
            (self.base / sub).mkdir(parents=True, exist_ok=True)
        self.base.chmod(0o755)  # the mail user must reach base/mail
        if os.geteuid() == 0:
            login_user, internal_user, mail_user = "dovenull", "dovecot", "dovecot"
            unprivileged = ""
        else:
            login_user = internal_user = mail_user = pwd.getpwuid(os.geteuid()).pw_name
            unprivileged = UNPRIVILEGED
        mail_pw = pwd.getpwnam(mail_user)
        if os.geteuid() == 0:
            for path in [self.base / "mail", *(self.base / "mail").rglob("*")]:
                os.chown(path, mail_pw.pw_uid, mail_pw.pw_gid)
        passwd = self.base / "passwd"
        passwd.write_text(f"{self.username}:{{PLAIN}}{self.password}\n")
        passwd.chmod(0o644)
        ssl = "ssl = no"
        if self.tls is not None:
            ssl = SSL_REQUIRED.format(cert=self.tls.server_cert, key=self.tls.server_key)
        kept = [c for c in DEFAULT_CAPABILITIES if c.upper() not in self.capabilities_without]
        capability_line = f"imap_capability = {' '.join(kept)}" if self.capabilities_without else ""
        self.conf_path.write_text(
            CONFIG.format(
                base=self.base,
                host=self.host,
                port=self._port,
                imaps_port=self._imaps_port,
                ssl=ssl,
                auth_mechanisms="plain login"
                + (" xoauth2 oauthbearer" if self.oauth2_introspection_url else ""),
                oauth2_passdb=self._write_oauth2_passdb(),
                login_user=login_user,
                internal_user=internal_user,
                internal_group=grp.getgrgid(mail_pw.pw_gid).gr_name,
                uid=mail_pw.pw_uid,
                gid=mail_pw.pw_gid,
                capability_line=capability_line,
                unprivileged=unprivileged,
            )
        )

    def _write_oauth2_passdb(self) -> str:
        """Write the oauth2 passdb's file; its ``passdb`` block ("" without introspection)."""
        if not self.oauth2_introspection_url:
            return ""
        # With tls, an https introspection URL is verified against the tests' CA. The auth
        # process (user dovecot when root runs the tests) reads it: a copy goes where it can.
        tls_line = ""
        if self.tls is not None:
            ca_copy = self.base / "introspection-ca.pem"
            shutil.copyfile(self.tls.ca_cert, ca_copy)
            ca_copy.chmod(0o644)
            tls_line = f"tls_ca_cert_file = {ca_copy}\n"
        conf = self.base / "dovecot-oauth2.conf.ext"
        conf.write_text(OAUTH2_CONF.format(url=self.oauth2_introspection_url, tls_line=tls_line))
        conf.chmod(0o644)
        return OAUTH2_PASSDB.format(conf=conf)

    def _remove_stale_pid(self) -> None:
        """Kill a master left by an earlier run of this folder and drop its pid file."""
        pid_file = self.base / "run" / "master.pid"
        with suppress(FileNotFoundError, ValueError, IndexError):
            pid = int(pid_file.read_text().split()[0])
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if str(self.conf_path).encode() in cmdline:
                os.kill(pid, signal.SIGKILL)
                wait_until(lambda: not Path(f"/proc/{pid}").exists(), 5.0)
        pid_file.unlink(missing_ok=True)

    def _spawn(self) -> None:
        self._log_offset = len(self.log())
        output = (self.base / "dovecot.out").open("wb")
        with output:
            self._proc = subprocess.Popen(
                ["dovecot", "-F", "-c", str(self.conf_path)],
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def _wait_ready(self, timeout: float) -> bool:
        def listening() -> bool:
            return not self.running or port_accepts(self.host, self._port)

        if not wait_until(listening, timeout) or not self.running:
            out = (self.base / "dovecot.out").read_text(errors="replace")
            if out.strip():
                with self.log_path.open("a") as log:
                    log.write(out)
            return False
        return wait_until(self._login_works, timeout, interval=0.05)

    def _login_works(self) -> bool:
        try:
            with self.client(timeout=2.0):
                return True
        except Exception:
            return False


# -- fixtures -------------------------------------------------------------------------


@pytest.fixture(scope="session")
def dovecot_server() -> Iterator[Dovecot]:
    """The session's shared Dovecot; prefer ``dovecot``, which also empties the folders."""
    server = Dovecot()
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def dovecot(dovecot_server: Dovecot) -> Dovecot:
    """The shared Dovecot, running, with INBOX and Processed empty and no other folder."""
    if not dovecot_server.running:
        dovecot_server.start()
    dovecot_server.clear()
    return dovecot_server


@pytest.fixture
def dovecot_factory() -> Iterator[Callable[..., Dovecot]]:
    """Make private Dovecots for one test: ``dovecot_factory(capabilities_without={"MOVE"})``,
    ``dovecot_factory(tls=tls_files, oauth2_introspection_url=url)`` (see ``Dovecot``).

    Each is started unless ``start=False`` and closed (stopped, deleted) after the test.
    """
    servers: list[Dovecot] = []

    def make(
        *,
        capabilities_without: Iterable[str] = (),
        start: bool = True,
        tls: TlsFiles | None = None,
        oauth2_introspection_url: str | None = None,
    ) -> Dovecot:
        server = Dovecot(
            capabilities_without=capabilities_without,
            tls=tls,
            oauth2_introspection_url=oauth2_introspection_url,
        )
        servers.append(server)
        if start:
            server.start()
        return server

    try:
        yield make
    finally:
        for server in servers:
            server.close()
