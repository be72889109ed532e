#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""Interoperability of inginious-backend with stock INGInious peers over ZeroMQ.

The peers here are what INGInious' own client and agents are on the wire: pyzmq DEALER
sockets (no identity) sending one-frame msgpack maps with "@type" (INGInious' common/messages.py).
Mixed fleets use the native protocol (proto.md) through a tiny Python peer.

Usage: interop.py BUILD_DIR   (prints "N passed, M failed"; exit 1 on failure)
Every wait is bounded; the backend is started on 127.0.0.1 port 0 and stopped by PID.
"""
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import traceback

import msgpack
import zmq

BUILD = sys.argv[1] if len(sys.argv) > 1 else "build"
TIMEOUT = 5.0
CTX = zmq.Context()


def pack(obj):
    return msgpack.packb(obj, use_bin_type=True)


def unpack(raw):
    return msgpack.unpackb(raw, raw=False, use_list=False, strict_map_key=False)


class Backend:
    def __init__(self, *args):
        self.dir = tempfile.mkdtemp(prefix="interop.")
        self.portfile = os.path.join(self.dir, "ports")
        self.log = open(os.path.join(self.dir, "log"), "w+")
        cmd = [os.path.join(BUILD, "inginious-backend"), "--port-file", self.portfile]
        cmd += list(args) + ["tcp://127.0.0.1:0", "tcp://127.0.0.1:0"]
        self.proc = subprocess.Popen(cmd, stderr=self.log)
        deadline = time.time() + TIMEOUT
        while not os.path.exists(self.portfile):
            if time.time() > deadline or self.proc.poll() is not None:
                raise RuntimeError("backend did not start")
            time.sleep(0.01)
        ports = dict(line.split() for line in open(self.portfile))
        self.agent_addr = ports["agent"]
        self.client_addr = ports["client"]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def logtext(self):
        self.log.flush()
        self.log.seek(0)
        return self.log.read()

    def livelog(self):
        """The log so far, read through a file of its own: the backend's stderr shares
        self.log's offset, which must not move while it runs."""
        with open(os.path.join(self.dir, "log")) as f:
            return f.read()

    def log_count(self, pattern):
        """How many log lines match the regular expression pattern."""
        return len(re.findall(pattern, self.livelog(), re.MULTILINE))

    def wait_log(self, pattern, timeout=TIMEOUT):
        """Bounded polling until a log line matches pattern."""
        deadline = time.time() + timeout
        while self.log_count(pattern) == 0:
            if time.time() > deadline:
                raise AssertionError("%r not logged within %.1fs" % (pattern, timeout))
            time.sleep(0.02)


class ZPeer:
    """A stock INGInious peer: a DEALER with no identity (unless given one), msgpack maps."""

    def __init__(self, addr, identity=None):
        self.s = CTX.socket(zmq.DEALER)
        self.s.setsockopt(zmq.LINGER, 0)
        self.s.setsockopt(zmq.IPV6, 1)
        if identity is not None:  # a routing id announced in READY (stock peers set none)
            self.s.setsockopt(zmq.ROUTING_ID, identity)
        self.s.connect(addr)

    def send(self, typ, **fields):
        fields["@type"] = typ
        self.s.send(pack(fields))

    def send_raw(self, *frames):
        self.s.send_multipart(list(frames))

    def recv(self, timeout=TIMEOUT, skip=("Ping",)):
        deadline = time.time() + timeout
        while True:
            left = deadline - time.time()
            if left <= 0 or not self.s.poll(int(left * 1000)):
                raise AssertionError("no message within %.1fs" % timeout)
            msg = unpack(self.s.recv())
            if msg.get("@type") in skip:
                if msg.get("@type") == "Ping":
                    self.send("Pong")
                continue
            return msg

    def expect(self, typ, timeout=TIMEOUT):
        msg = self.recv(timeout)
        assert msg["@type"] == typ, "expected %s, got %r" % (typ, msg)
        return msg

    def nothing(self, ms=200):
        """No job message within ms (pings are answered, environment broadcasts skipped)."""
        deadline = time.time() + ms / 1000
        while time.time() < deadline:
            if self.s.poll(10):
                msg = unpack(self.s.recv())
                if msg.get("@type") == "Ping":
                    self.send("Pong")
                    continue
                if msg.get("@type") == "BackendUpdateEnvironments":
                    continue
                raise AssertionError("unexpected %r" % (msg,))

    def close(self):
        self.s.close(0)


INFO = {"id": "i1", "created": 1, "ports": [], "advertised": True}


def new_job(peer, job_id, env="default", prio=0, state=None, inp=None, time_limit=30):
    inputdata = dict(inp or {"q": "answer"})
    if state is not None:
        inputdata["@state"] = state
    peer.send("ClientNewJob", job_id=job_id, priority=prio, course_id="c", task_id="t",
              task_problems={"q": {"type": "code"}}, inputdata=inputdata,
              environment_type="docker", environment=env,
              environment_parameters={"limits": {"time": time_limit}}, debug=False,
              launcher="Frontend - alice")


def done_fields(job_id, kind="success", text="ok"):
    return dict(job_id=job_id, result=(kind, text), grade=100.0, problems={"q": ("success", "")},
                tests={}, custom={"k": 1}, state="S2", archive=b"\x1f\x8bTGZ", stdout="out",
                stderr=None)


def hello_client(addr):
    c = ZPeer(addr)
    c.send("ClientHello", name="me")
    envs = c.expect("BackendUpdateEnvironments")
    return c, envs


def hello_agent(addr, name="A", slots=1, envs=None):
    a = ZPeer(addr)
    a.send("AgentHello", friendly_name=name, available_job_slots=slots,
           available_environments=envs or {"docker": {"default": INFO}})
    return a


# ---- a minimal native peer (proto.md), for mixed fleets ----------------------------------

def s_(b):
    b = b.encode() if isinstance(b, str) else b
    return struct.pack(">I", len(b)) + b


def ns(b):
    return b"\xff\xff\xff\xff" if b is None else s_(b)


def mp(o):
    m = pack(o)
    return struct.pack(">I", len(m)) + m


class NPeer:
    def __init__(self, addr, role):
        host, port = addr[len("tcp://"):].rsplit(":", 1)
        self.c = socket.create_connection((host, int(port)), timeout=TIMEOUT)
        self.buf = b""
        self.c.sendall(b"\x89ING" + bytes([1, role, 0, 0]))
        t, _ = self.recv()
        assert t == 0x02, "expected Welcome"

    def send(self, t, body):
        self.c.sendall(struct.pack(">IBB", len(body), t, 0) + body)

    def recv(self, skip_ping=True):
        while True:
            if len(self.buf) >= 6:
                n, t, _ = struct.unpack(">IBB", self.buf[:6])
                if len(self.buf) >= 6 + n:
                    body = self.buf[6:6 + n]
                    self.buf = self.buf[6 + n:]
                    if skip_ping and t == 0x05:
                        self.send(0x06, b"")
                        continue
                    return t, body
            data = self.c.recv(65536)
            if not data:
                raise AssertionError("connection closed")
            self.buf += data

    def expect(self, t, skip=(0x20,)):
        """The next frame of type t, skipping environment updates (pings are answered)."""
        while True:
            got, body = self.recv()
            if got == t:
                return body
            assert got in skip, "expected type %#x, got %#x %r" % (t, got, body[:64])

    def close(self):
        self.c.close()

    @staticmethod
    def str_at(body, off):
        n = struct.unpack(">I", body[off:off + 4])[0]
        return body[off + 4:off + 4 + n].decode(), off + 4 + n

    @staticmethod
    def mp_at(body, off):
        n = struct.unpack(">I", body[off:off + 4])[0]
        return unpack(body[off + 4:off + 4 + n]), off + 4 + n


def native_queue(body):
    """Decodes a native BackendGetQueue (proto.md §5.5) into the ZeroMQ dialect's tuples."""
    def str_(off):
        return NPeer.str_at(body, off)

    def bool_(off):
        assert body[off] in (0, 1), body[off]
        return body[off] == 1, off + 1

    def i64(off):
        return struct.unpack(">q", body[off:off + 8])[0], off + 8

    running, waiting = [], []
    off = 0
    (n,) = struct.unpack(">I", body[off:off + 4])
    off += 4
    for _ in range(n):
        e = []
        for f in (str_, bool_, str_, str_, str_, i64, i64):
            v, off = f(off)
            e.append(v)
        running.append(tuple(e))
    (n,) = struct.unpack(">I", body[off:off + 4])
    off += 4
    for _ in range(n):
        e = []
        for f in (str_, bool_, str_, str_, i64):
            v, off = f(off)
            e.append(v)
        waiting.append(tuple(e))
    assert off == len(body), (off, len(body))
    return tuple(running), tuple(waiting)


def native_hello_agent(addr, name, slots, envs):
    a = NPeer(addr, 1)
    a.send(0x40, s_(name) + struct.pack(">I", slots) + mp(envs))
    return a


def native_hello_client(addr, name="native"):
    c = NPeer(addr, 2)
    c.send(0x10, s_(name))
    body = c.expect(0x20, skip=())
    return c, NPeer.mp_at(body, 0)[0]


def native_new_job(c, job_id, env="default", prio=0, state=None, launcher="L-native",
                   time_limit="12"):
    inputdata = {} if state is None else {"@state": state}
    spec = s_(job_id) + ns("c") + ns("t") + s_("docker") + s_(env) + b"\x00" + mp({}) + \
        mp(inputdata) + mp({"limits": {"time": time_limit}})
    c.send(0x11, struct.pack(">q", prio) + s_(launcher) + spec)


def native_result(job_id, kind="success", text="fine", state="S3"):
    return s_(job_id) + s_(kind) + s_(text) + struct.pack(">d", 50.0) + mp({}) + mp({}) + \
        mp({}) + s_(state) + ns(None) + ns("o") + ns("e")


# ---- scenarios (the INGInious backend's behaviour, as in test_scenarios.c) -----------------

def test_registration_gate(be):
    """§6.1–3: Ping and ClientNewJob (even with wrongly typed values) before hello get Unknown;
    hello gets the map; Ping→Pong."""
    c = ZPeer(be.client_addr)
    c.send("Ping")
    c.expect("Unknown")
    new_job(c, "j0")
    c.expect("Unknown")
    # The gate comes before any check of the values, as in INGInious.
    new_job(c, "j0", prio="high")
    c.expect("Unknown")
    c.send("ClientKillJob", job_id=5)
    c.expect("Unknown")
    c.send("ClientHello", name="me")
    assert c.expect("BackendUpdateEnvironments")["available_environments"] == {}
    c.send("Ping")
    c.expect("Pong")
    c.send("ClientGetQueue")
    q = c.expect("BackendGetQueue")
    assert q["jobs_waiting"] == () and q["jobs_running"] == (), q


def test_dispatch_and_result(be):
    """§6.6, §6.12, §6.28–30: hello broadcast, BackendNewJob fields, started, SSH, done."""
    c, _ = hello_client(be.client_addr)
    a = hello_agent(be.agent_addr, slots=1)
    assert c.expect("BackendUpdateEnvironments")["available_environments"] == {
        "docker": ("default",)}
    new_job(c, "j1", state="S1")
    j = a.expect("BackendNewJob")
    assert set(j) == {"@type", "job_id", "course_id", "task_id", "task_problems", "inputdata",
                      "environment_type", "environment", "environment_parameters", "debug"}, j
    assert j["job_id"] == "j1" and j["course_id"] == "c" and j["inputdata"]["@state"] == "S1"
    assert j["environment_parameters"] == {"limits": {"time": 30}} and j["debug"] is False
    a.send("AgentJobStarted", job_id="j1")
    assert c.expect("BackendJobStarted")["job_id"] == "j1"
    a.send("AgentJobSSHDebug", job_id="j1", host="h", port=64120, user="worker", password="pw")
    ssh = c.expect("BackendJobSSHDebug")
    assert (ssh["host"], ssh["port"], ssh["user"], ssh["password"]) == ("h", 64120, "worker",
                                                                          "pw")
    a.send("AgentJobDone", **done_fields("j1"))
    d = c.expect("BackendJobDone")
    want = done_fields("j1")
    for k, v in want.items():
        got = d[k]
        assert (tuple(got) if isinstance(v, tuple) else got) == v, (k, got, v)


def test_kill_waiting_and_running(be):
    """§6.20–22: kill waiting (owner gets killed + @state), running (agent gets the kill)."""
    c1, _ = hello_client(be.client_addr)
    c2, _ = hello_client(be.client_addr)
    new_job(c1, "w", env="nobody", state="SW")
    c1.send("ClientGetQueue")  # w is queued before c2 (another connection) kills it
    assert [w[0] for w in c1.expect("BackendGetQueue")["jobs_waiting"]] == ["w"]
    c2.send("ClientKillJob", job_id="w")
    d = c1.expect("BackendJobDone")
    assert tuple(d["result"]) == ("killed", "You killed the job") and d["state"] == "SW", d
    c2.nothing()
    a = hello_agent(be.agent_addr)
    c1.expect("BackendUpdateEnvironments")
    new_job(c1, "r", state="SR")
    a.expect("BackendNewJob")
    c2.send("ClientKillJob", job_id="r")
    k = a.expect("BackendKillJob")
    assert k["job_id"] == "r" and k["state"] == "SR", k
    a.send("AgentJobDone", **done_fields("r", "killed", ""))
    assert tuple(c1.expect("BackendJobDone")["result"])[0] == "killed"
    c2.send("ClientKillJob", job_id="nope")
    c2.nothing()


def test_queue_snapshot(be):
    """§6.24: the queue layout, with one running and one waiting job."""
    c, _ = hello_client(be.client_addr)
    a = hello_agent(be.agent_addr, name="A", slots=1)
    c.expect("BackendUpdateEnvironments")
    new_job(c, "run")
    a.expect("BackendNewJob")
    new_job(c, "wait")
    c.send("ClientGetQueue")
    q = c.expect("BackendGetQueue")
    (r,) = q["jobs_running"]
    assert r[0] == "run" and r[1] is True and r[2] == "A" and r[3] == "c/t" and \
        r[4] == "Frontend - alice" and isinstance(r[5], int) and r[6] == 30, r
    assert q["jobs_waiting"] == (("wait", True, "c/t", "Frontend - alice", 30),), q


def test_heartbeat_and_agent_loss(be):
    """§6.35–36: agents get Ping; a silent agent is removed and its started job crashes."""
    c, _ = hello_client(be.client_addr)
    a = hello_agent(be.agent_addr)
    c.expect("BackendUpdateEnvironments")
    new_job(c, "lost", state="SL")
    msg = a.s.poll(int(TIMEOUT * 1000)) and unpack(a.s.recv())
    while msg["@type"] == "Ping":
        msg = a.s.poll(int(TIMEOUT * 1000)) and unpack(a.s.recv())
    assert msg["@type"] == "BackendNewJob"
    a.send("AgentJobStarted", job_id="lost")
    c.expect("BackendJobStarted")
    pings = 0
    deadline = time.time() + TIMEOUT
    while time.time() < deadline:  # stay silent: count pings, answer none
        if a.s.poll(50) and unpack(a.s.recv())["@type"] == "Ping":
            pings += 1
        if c.s.poll(0):
            break
    d = c.recv(skip=("Ping", "BackendUpdateEnvironments"))
    assert d["@type"] == "BackendJobDone", d
    assert tuple(d["result"]) == ("crash", "Agent restarted") and d["state"] == "SL", d
    assert pings >= 5, pings


def test_bad_messages_survive(be):
    """§6.41: garbage, non-maps, unknown types, missing/extra keys, wrong port, 2 frames."""
    c, _ = hello_client(be.client_addr)
    bad = ZPeer(be.client_addr)
    bad.send_raw(b"\xc1garbage")
    bad.send_raw(pack([1, 2, 3]))
    bad.send_raw(pack({"no": "type"}))
    bad.send_raw(pack({"@type": "Nope"}))
    bad.send_raw(pack({"@type": "ClientHello"}))
    bad.send_raw(pack({"@type": "ClientHello", "name": "x", "extra": 1}))
    bad.send_raw(b"", pack({"@type": "Ping"}))
    agentside = ZPeer(be.agent_addr)
    agentside.send("ClientHello", name="x")
    bad.send("ClientHello", name="me")
    bad.send("AgentHello", friendly_name="x", available_job_slots=1, available_environments={})
    bad.expect("BackendUpdateEnvironments")
    c.send("Ping")
    c.expect("Pong")
    assert be.proc.poll() is None


def test_bad_values_refused(be):
    """§6.42: a non-integer priority is answered crash, other jobs keep flowing."""
    c, _ = hello_client(be.client_addr)
    a = hello_agent(be.agent_addr)
    c.expect("BackendUpdateEnvironments")
    c.send("ClientNewJob", job_id="bad", priority="high", course_id="c", task_id="t",
           task_problems={}, inputdata={}, environment_type="docker", environment="default",
           environment_parameters={}, debug=False, launcher="L")
    d = c.expect("BackendJobDone")
    assert d["job_id"] == "bad" and d["result"][0] == "crash", d
    new_job(c, "good")
    assert a.expect("BackendNewJob")["job_id"] == "good"


def test_taskset_id_and_ssh_allowed(be):
    """UCL master's taskset_id and v0.8's ssh_allowed are accepted."""
    c, _ = hello_client(be.client_addr)
    a = ZPeer(be.agent_addr)
    a.send("AgentHello", friendly_name="old", available_job_slots=1, ssh_allowed=True,
           available_environments={"docker": {"default": {"id": "i", "created": 1}}})
    assert c.expect("BackendUpdateEnvironments")["available_environments"] == {
        "docker": ("default",)}  # no "advertised": true
    c.send("ClientNewJob", job_id="ts", priority=0, taskset_id="c", task_id="t",
           task_problems={}, inputdata={}, environment_type="docker", environment="default",
           environment_parameters={}, debug="ssh", launcher="L")
    j = a.expect("BackendNewJob")
    assert j["course_id"] == "c" and j["debug"] == "ssh", j


def test_job_field_taskset_id(be):
    """--job-field taskset_id: ZeroMQ agents get the course as taskset_id (UCL master)."""
    be.stop()
    be2 = Backend("--job-field", "taskset_id")
    try:
        c, _ = hello_client(be2.client_addr)
        a = hello_agent(be2.agent_addr)
        c.expect("BackendUpdateEnvironments")
        new_job(c, "tf")
        j = a.expect("BackendNewJob")
        assert j.get("taskset_id") == "c" and "course_id" not in j, j
    finally:
        be2.stop()


def test_mixed_zmq_client_native_agent(be):
    """A job from a ZeroMQ client runs on a native agent and comes back."""
    c, _ = hello_client(be.client_addr)
    a = NPeer(be.agent_addr, 1)
    a.send(0x40, s_("native") + struct.pack(">I", 1) + mp({"docker": {"default": INFO}}))
    c.expect("BackendUpdateEnvironments")
    new_job(c, "zn", state="S")
    t, body = a.recv()
    assert t == 0x30, hex(t)
    job_id, _ = NPeer.str_at(body, 0)
    assert job_id == "zn"
    a.send(0x41, s_("zn"))
    c.expect("BackendJobStarted")
    res = s_("zn") + s_("success") + s_("fine") + struct.pack(">d", 87.5) + mp({}) + mp({}) + \
        mp({}) + s_("S3") + ns(None) + ns("o") + ns("e")
    a.send(0x42, res)
    d = c.expect("BackendJobDone")
    assert tuple(d["result"]) == ("success", "fine") and d["grade"] == 87.5, d
    assert d["archive"] is None and d["stdout"] == "o" and d["state"] == "S3", d


def test_mixed_native_client_zmq_agent(be):
    """A job from a native client runs on a ZeroMQ agent, and the native client's queue
    snapshot lists it running there (agent name, info, launcher, time limit)."""
    a = hello_agent(be.agent_addr, name="Z")
    c = NPeer(be.client_addr, 2)
    c.send(0x10, s_("me"))
    t, _ = c.recv()
    assert t == 0x20
    spec = s_("nz") + ns("c") + ns("t") + s_("docker") + s_("default") + b"\x00" + mp({}) + \
        mp({"@state": "S"}) + mp({"limits": {"time": "12"}})
    c.send(0x11, struct.pack(">q", 0) + s_("L") + spec)
    j = a.expect("BackendNewJob")
    assert j["job_id"] == "nz" and j["inputdata"] == {"@state": "S"}, j
    c.send(0x13, b"")
    running, waiting = native_queue(c.expect(0x24))
    (r,) = running
    assert r[:5] == ("nz", True, "Z", "c/t", "L") and r[6] == 12, r
    assert abs(r[5] - time.time()) < 60 and waiting == (), (running, waiting)
    a.send("AgentJobDone", **done_fields("nz"))
    while True:
        t, body = c.recv()
        if t == 0x22:
            break
    assert NPeer.str_at(body, 0)[0] == "nz"


# ---- connection-level paths: identities, TCP closes, mixed fleets ---------------------------

def on_backend(be, args, fn):
    """Runs fn(be2) on a backend of its own started with args (be is stopped first); prints
    that backend's log when fn fails, and checks that it exits 0."""
    be.stop()
    be2 = Backend(*args)
    try:
        fn(be2)
    except Exception:
        be2.stop()
        print("--- log of the backend with %s ---\n%s" % (" ".join(args), be2.logtext()[-4000:]))
        raise
    rc = be2.stop()
    assert rc == 0, "backend exit status %s" % rc


# Heartbeats too slow to explain anything a test sees within its waits: a peer noticed gone
# is noticed by its TCP close. A short drain so that jobs left running do not hold the exit.
SLOW_PINGS = ("--ping-interval", "10s", "--ping-max", "5", "--drain-timeout", "1s")
LOSS_WAIT = 3.0  # well under 10 s x 5 missed pings


def zmq_envs_until(c, want, timeout=TIMEOUT):
    """Reads the ZeroMQ client's BackendUpdateEnvironments until one lists exactly want."""
    deadline = time.time() + timeout
    got = None
    while True:
        left = deadline - time.time()
        try:
            assert left > 0
            msg = c.recv(timeout=left)
        except AssertionError:
            raise AssertionError("environments never became %r (last %r)" % (want, got))
        assert msg["@type"] == "BackendUpdateEnvironments", msg
        got = msg["available_environments"]
        if got == want:
            return


def native_envs_until(c, want, timeout=TIMEOUT):
    """The same for a native client (type 0x20, the map as an mp field)."""
    deadline = time.time() + timeout
    c.c.settimeout(0.1)
    got = None
    try:
        while time.time() < deadline:
            try:
                body = c.expect(0x20, skip=())
            except socket.timeout:
                continue
            got = NPeer.mp_at(body, 0)[0]
            if got == want:
                return
    finally:
        c.c.settimeout(TIMEOUT)
    raise AssertionError("native: environments never became %r (last %r)" % (want, got))


def test_release_kill_shapes(be):
    """§11.2: each agent gets its release's BackendKillJob: with state (main, v0.8.x), without
    (v0.7.x: the Docker agent's float "created")."""
    c, _ = hello_client(be.client_addr)
    shapes = [
        ("main", {"docker": {"k-main": INFO}}, {}, True),
        ("v08", {"docker": {"k-v08": INFO}}, {"ssh_allowed": False}, True),
        ("v07", {"docker": {"k-v07": dict(INFO, created=1700000000.25)}}, {}, False),
    ]
    for name, envs, extra, with_state in shapes:
        a = ZPeer(be.agent_addr)
        a.send("AgentHello", friendly_name=name, available_job_slots=1,
               available_environments=envs, **extra)
        env = list(envs["docker"])[0]
        deadline = time.time() + TIMEOUT
        while True:  # the environment list may come after a ping
            e = c.recv(skip=("Ping",))
            if e["@type"] == "BackendUpdateEnvironments" and env in e["available_environments"].get("docker", ()):
                break
            assert time.time() < deadline
        new_job(c, "k" + name, env=env, state="S1")
        assert a.expect("BackendNewJob")["job_id"] == "k" + name
        c.send("ClientKillJob", job_id="k" + name)
        k = a.expect("BackendKillJob")
        if with_state:
            assert k == {"job_id": "k" + name, "state": "S1", "@type": "BackendKillJob"}, k
        else:
            assert k == {"job_id": "k" + name, "@type": "BackendKillJob"}, k
        a.send("AgentJobDone", **dict(done_fields("k" + name, "killed", ""), state="S1"))
        d = c.recv(skip=("Ping", "BackendUpdateEnvironments"))
        assert d["job_id"] == "k" + name and d["result"][0] == "killed", d
        a.close()


def kill_of(be, c, a, job_id, env_type, env):
    """A job of c for env_type/env is sent to the agent a and killed: the BackendKillJob that a
    receives (a then answers killed and c gets it)."""
    deadline = time.time() + TIMEOUT
    while True:  # the environment list may come after a ping
        e = c.recv(skip=("Ping",))
        if e["@type"] == "BackendUpdateEnvironments" and env in e["available_environments"].get(env_type, ()):
            break
        assert time.time() < deadline
    c.send("ClientNewJob", job_id=job_id, priority=0, course_id="c", task_id="t",
           task_problems={}, inputdata={"@state": "S1"}, environment_type=env_type,
           environment=env, environment_parameters={"limits": {"time": 30}}, debug=False,
           launcher="L")
    assert a.expect("BackendNewJob")["job_id"] == job_id
    c.send("ClientKillJob", job_id=job_id)
    k = a.expect("BackendKillJob")
    a.send("AgentJobDone", **dict(done_fields(job_id, "killed", ""), state="S1"))
    d = c.recv(skip=("Ping", "BackendUpdateEnvironments"))
    assert d["job_id"] == job_id and d["result"][0] == "killed", d
    return k


def test_release_kill_state_never(be):
    """§11.2 --zmq-kill-state never: a v0.8.0 Docker agent (its hello is v0.8.1's: ssh_allowed,
    a float created) and a v0.7.x MCQ agent (created 0, as main's) get BackendKillJob with
    job_id only, as their dataclass BackendKillJob(job_id) requires."""
    c, _ = hello_client(be.client_addr)
    a8 = ZPeer(be.agent_addr)
    a8.send("AgentHello", friendly_name="v0.8.0", available_job_slots=1, ssh_allowed=False,
            available_environments={"docker": {"k8": dict(INFO, created=1700000000.25)}})
    k = kill_of(be, c, a8, "k8", "docker", "k8")
    assert k == {"job_id": "k8", "@type": "BackendKillJob"}, k
    a7 = ZPeer(be.agent_addr)
    a7.send("AgentHello", friendly_name="mcq-v0.7", available_job_slots=1,
            available_environments={"mcq": {"mcq": {"id": "mcq", "created": 0}}})
    k = kill_of(be, c, a7, "k7", "mcq", "mcq")
    assert k == {"job_id": "k7", "@type": "BackendKillJob"}, k
    a8.close()
    a7.close()


test_release_kill_state_never.backend_args = ("--zmq-kill-state", "never")


def test_release_kill_state_default_v080(be):
    """§11.2: without the option, a v0.8.0 hello is taken as v0.8.1's: the kill has state."""
    c, _ = hello_client(be.client_addr)
    a8 = ZPeer(be.agent_addr)
    a8.send("AgentHello", friendly_name="v0.8.0", available_job_slots=1, ssh_allowed=False,
            available_environments={"docker": {"k8": dict(INFO, created=1700000000.25)}})
    k = kill_of(be, c, a8, "k8", "docker", "k8")
    assert k == {"job_id": "k8", "state": "S1", "@type": "BackendKillJob"}, k
    a8.close()


def test_libzmq_greets_at_connect(be):
    """§11.1: a stock DEALER (what every INGInious release's client and agent are: pyzmq,
    libzmq's ZMTP engine) sends the first 10 bytes of its greeting as soon as it connects,
    without waiting for the server's; it sends its version byte only after the server's 10
    bytes, and the rest after the server's version. So the backend's default (greeting on the
    peer's first byte) never waits for a libzmq peer."""
    lis = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lis.bind(("127.0.0.1", 0))
    lis.listen(1)
    lis.settimeout(TIMEOUT)
    d = CTX.socket(zmq.DEALER)
    d.setsockopt(zmq.LINGER, 0)
    try:
        d.connect("tcp://127.0.0.1:%d" % lis.getsockname()[1])
        s, _ = lis.accept()
        s.settimeout(TIMEOUT)

        def read(n):
            got = b""
            while len(got) < n:
                chunk = s.recv(n - len(got))
                assert chunk, "the DEALER closed after %r" % got
                got += chunk
            return got

        sig = read(10)  # nothing sent by us yet
        assert sig[0] == 0xFF and sig[9] == 0x7F, sig.hex()
        s.settimeout(0.2)
        try:
            more = s.recv(1)
        except socket.timeout:
            more = b""
        assert more == b"", "libzmq sent %r before our signature" % more
        s.settimeout(TIMEOUT)
        s.sendall(b"\xff" + b"\0" * 8 + b"\x7f")
        assert read(1) == b"\x03"  # its major version, after our signature
        s.sendall(b"\x03\x01" + b"NULL".ljust(20, b"\0") + b"\x00" + b"\0" * 31)
        rest = read(53)  # minor version, mechanism, as-server, filler
        assert rest[1:5] == b"NULL", rest.hex()
        s.close()
    finally:
        d.close(0)
        lis.close()


def test_release_unusable_result_ends_job(be):
    """§11.2: an AgentJobDone that cannot be used ends its job (crash naming the field,
    @state kept) and frees the slot; loosely typed values are relayed coerced."""
    c, _ = hello_client(be.client_addr)
    a = hello_agent(be.agent_addr)
    c.expect("BackendUpdateEnvironments")
    new_job(c, "u1", state="S1")
    a.expect("BackendNewJob")
    a.send("AgentJobDone", **dict(done_fields("u1"), problems=[1]))
    d = c.expect("BackendJobDone")
    assert d["result"][0] == "crash" and "problems" in d["result"][1], d
    assert d["state"] == "S1" and d["stdout"] is None, d
    new_job(c, "u2")
    a.expect("BackendNewJob")
    a.send("AgentJobDone", **dict(done_fields("u2"), state=None, tests=None, grade=80,
                                  stdout=b"bytes"))
    d = c.expect("BackendJobDone")
    assert d["state"] == "" and d["tests"] == {} and d["stdout"] == "bytes", d
    assert d["grade"] == 80 and isinstance(d["grade"], int), d


def test_release_v08_ssh_routing(be):
    """§11.2: a job asking for SSH goes only to a v0.8.x agent that allows SSH."""
    c, _ = hello_client(be.client_addr)
    no = ZPeer(be.agent_addr)
    no.send("AgentHello", friendly_name="no", available_job_slots=1,
            available_environments={"docker": {"default": INFO}}, ssh_allowed=False)
    c.expect("BackendUpdateEnvironments")
    c.send("ClientNewJob", job_id="s1", priority=0, course_id="c", task_id="t",
           task_problems={}, inputdata={}, environment_type="docker", environment="default",
           environment_parameters={"ssh_allowed": True}, debug="ssh", launcher="L")
    no.nothing(300)
    yes = ZPeer(be.agent_addr)
    yes.send("AgentHello", friendly_name="yes", available_job_slots=1,
             available_environments={"docker": {"default": INFO}}, ssh_allowed=True)
    j = yes.expect("BackendNewJob")
    assert j["job_id"] == "s1" and j["environment"] == "default", j
    e = c.expect("BackendUpdateEnvironments")
    assert e["available_environments"] == {"docker": ("default",)}, e


def legacy_recv(peer):
    """The next v0.6 message of peer, its pings answered (bounded by TIMEOUT)."""
    deadline = time.time() + TIMEOUT
    while True:
        left = deadline - time.time()
        if left <= 0 or not peer.s.poll(int(left * 1000)):
            raise AssertionError("no message within %.1fs" % TIMEOUT)
        msg = unpack(peer.s.recv())
        if msg.get("type") != "ping":
            return msg
        peer.s.send(pack({"type": "pong"}))


def test_release_v06_dialect(be):
    """§11.2.1: a v0.6.2 client and agent (the "type" key) on the same ports."""
    c = ZPeer(be.client_addr)
    c.s.send(pack({"name": "old", "type": "client_hello"}))
    assert legacy_recv(c) == {"available_containers": (), "type": "backend_update_containers"}
    a = ZPeer(be.agent_addr)
    a.s.send(pack({"friendly_name": "A6", "available_job_slots": 1,
                   "available_containers": {"default": {"id": "i", "created": 1}},
                   "type": "agent_hello"}))
    assert legacy_recv(c) == {"available_containers": ("default",),
                                  "type": "backend_update_containers"}
    c.s.send(pack({"job_id": "o1", "priority": 0, "course_id": "c", "task_id": "t",
                   "inputdata": {"@state": "S1"}, "debug": False, "environment": "default",
                   "enable_network": False, "time_limit": 30, "hard_time_limit": None,
                   "mem_limit": 512, "launcher": "L", "run_cmd": None,
                   "type": "client_new_job"}))
    j = legacy_recv(a)
    assert j["type"] == "backend_new_job" and j["job_id"] == (b"", "o1"), j
    assert (j["time_limit"], j["hard_time_limit"], j["mem_limit"]) == (30, None, 512), j
    a.s.send(pack({"job_id": j["job_id"], "result": ("success", "ok"), "grade": 100.0,
                   "problems": {}, "tests": {}, "custom": {}, "state": "S2", "archive": None,
                   "stdout": "", "stderr": "", "type": "agent_job_done"}))
    d = legacy_recv(c)
    assert d["type"] == "backend_job_done" and d["job_id"] == "o1" and d["state"] == "S2", d


TAKEOVER_CLIENT = r"WARNING - client \d+ \(.*\) zmq: identity in use: client \d+ .* taken over"
TAKEOVER_AGENT = r"WARNING - agent \d+ \(.*\) zmq: identity in use: agent \d+ .* taken over"


def test_zmq_identity_takeover(be):
    """§11.1: a second connection announcing a routing id already in use on the same endpoint
    takes it over, as libzmq's ROUTER_HANDOVER: the old connection is closed (its jobs end as
    on a disconnection) and the new one is served; the same id on the other endpoint is
    another peer."""
    c1 = ZPeer(be.client_addr, identity=b"webapp-1")
    c1.send("ClientHello", name="first")
    c1.expect("BackendUpdateEnvironments")
    a1 = ZPeer(be.agent_addr, identity=b"webapp-1")
    a1.send("AgentHello", friendly_name="A1", available_job_slots=1,
            available_environments={"docker": {"default": INFO}})
    assert c1.expect("BackendUpdateEnvironments")["available_environments"] == {
        "docker": ("default",)}
    assert be.log_count(TAKEOVER_AGENT) == 0  # a1 did not take c1's id: other endpoint
    c2 = ZPeer(be.client_addr, identity=b"webapp-1")
    c2.send("ClientHello", name="second")
    assert c2.expect("BackendUpdateEnvironments")["available_environments"] == {
        "docker": ("default",)}
    be.wait_log(TAKEOVER_CLIENT)
    c2.send("Ping")
    c2.expect("Pong")
    new_job(c2, "h1")
    assert a1.expect("BackendNewJob")["job_id"] == "h1"
    # A reconnecting agent with a1's id takes over: a1's job ends "Agent restarted" (not
    # started: requeued to the new connection).
    a2 = ZPeer(be.agent_addr, identity=b"webapp-1")
    a2.send("AgentHello", friendly_name="A2", available_job_slots=1,
            available_environments={"docker": {"default": INFO}})
    be.wait_log(TAKEOVER_AGENT)
    assert a2.expect("BackendNewJob")["job_id"] == "h1"
    a2.send("AgentJobDone", **done_fields("h1"))
    d = c2.recv(skip=("Ping", "BackendUpdateEnvironments"))
    assert d["job_id"] == "h1" and tuple(d["result"]) == ("success", "ok"), d
    for p in (c1, c2, a1, a2):
        p.close()
    assert be.proc.poll() is None


def test_zmq_agent_tcp_close(be):
    """§7.5, §11.1: a ZeroMQ agent's TCP close is its disconnection (heartbeats are 10 s
    here): its started job ends crash "Agent restarted" keeping @state, its job not yet
    started is requeued and runs on another agent, which reports it to the client."""
    def run(b):
        c, _ = hello_client(b.client_addr)
        a1 = hello_agent(b.agent_addr, name="A1", slots=2)
        c.expect("BackendUpdateEnvironments")
        new_job(c, "started", state="S-started")
        new_job(c, "notyet", state="S-notyet")
        assert a1.expect("BackendNewJob")["job_id"] == "started"
        assert a1.expect("BackendNewJob")["job_id"] == "notyet"
        a1.send("AgentJobStarted", job_id="started")
        assert c.expect("BackendJobStarted")["job_id"] == "started"
        a2 = hello_agent(b.agent_addr, name="A2", slots=1)
        c.expect("BackendUpdateEnvironments")  # A2 registered (every hello is broadcast)
        a2.nothing(200)  # both jobs are A1's: nothing for A2 yet
        c.send("ClientGetQueue")
        q = c.expect("BackendGetQueue")
        assert [(r[0], r[2]) for r in q["jobs_running"]] == [("started", "A1"),
                                                             ("notyet", "A1")], q
        t0 = time.time()
        a1.close()  # linger 0: the TCP connection closes now
        d = c.recv(timeout=LOSS_WAIT, skip=("Ping", "BackendUpdateEnvironments"))
        assert d["@type"] == "BackendJobDone" and d["job_id"] == "started", d
        assert tuple(d["result"]) == ("crash", "Agent restarted"), d
        assert d["state"] == "S-started" and d["grade"] == 0.0, d
        j = a2.expect("BackendNewJob", timeout=LOSS_WAIT)
        assert j["job_id"] == "notyet" and j["inputdata"]["@state"] == "S-notyet", j
        assert time.time() - t0 < LOSS_WAIT
        log = b.livelog()
        assert "agent A1 disconnected" in log and "missed" not in log, log[-2000:]
        c.send("ClientGetQueue")
        q = c.expect("BackendGetQueue")
        assert [(r[0], r[2]) for r in q["jobs_running"]] == [("notyet", "A2")], q
        assert q["jobs_waiting"] == (), q
        a2.send("AgentJobStarted", job_id="notyet")
        assert c.expect("BackendJobStarted")["job_id"] == "notyet"
        a2.send("AgentJobDone", **done_fields("notyet"))
        d = c.recv(skip=("Ping", "BackendUpdateEnvironments"))
        assert d["@type"] == "BackendJobDone" and d["job_id"] == "notyet", d
        assert tuple(d["result"]) == ("success", "ok") and d["state"] == "S2", d
        c.nothing(200)  # exactly one result per job
        a2.close()
        c.close()
    on_backend(be, SLOW_PINGS, run)


def test_zmq_client_tcp_close(be):
    """§7.1, §11.1: a ZeroMQ client's TCP close is its disconnection: its running job is
    killed on its agent (BackendKillJob with the @state), its waiting job is dropped (never
    dispatched, not listed); another client's job queued behind it runs in the freed slot."""
    def run(b):
        c1, _ = hello_client(b.client_addr)
        c2, _ = hello_client(b.client_addr)
        a = hello_agent(b.agent_addr, name="A", slots=1)
        c1.expect("BackendUpdateEnvironments")
        c2.expect("BackendUpdateEnvironments")
        new_job(c1, "c1-run", state="S-run")
        assert a.expect("BackendNewJob")["job_id"] == "c1-run"
        a.send("AgentJobStarted", job_id="c1-run")
        assert c1.expect("BackendJobStarted")["job_id"] == "c1-run"
        new_job(c1, "c1-wait", state="S-wait")
        c1.send("ClientGetQueue")  # c1's messages are handled in order: c1-wait is queued
        assert [w[0] for w in c1.expect("BackendGetQueue")["jobs_waiting"]] == ["c1-wait"]
        new_job(c2, "c2-wait")
        c2.send("ClientGetQueue")
        q = c2.expect("BackendGetQueue")
        assert [(w[0], w[1]) for w in q["jobs_waiting"]] == [("c1-wait", False),
                                                             ("c2-wait", True)], q
        t0 = time.time()
        c1.close()
        k = a.expect("BackendKillJob", timeout=LOSS_WAIT)
        assert k["job_id"] == "c1-run" and k["state"] == "S-run", k
        assert time.time() - t0 < LOSS_WAIT
        c2.send("ClientGetQueue")  # c1-wait is gone from the queue at once
        q = c2.expect("BackendGetQueue")
        assert [r[0] for r in q["jobs_running"]] == ["c1-run"], q
        assert [w[0] for w in q["jobs_waiting"]] == ["c2-wait"], q
        # The agent answers the kill; the result has nowhere to go; the slot goes to c2's
        # job, not to c1's dropped one.
        a.send("AgentJobDone", **done_fields("c1-run", "killed", "killed by the backend"))
        j = a.expect("BackendNewJob")
        assert j["job_id"] == "c2-wait", j
        a.send("AgentJobDone", **done_fields("c2-wait"))
        d = c2.expect("BackendJobDone")
        assert d["job_id"] == "c2-wait" and tuple(d["result"]) == ("success", "ok"), d
        a.nothing(300)  # c1-wait never comes
        c2.nothing(100)  # and nothing of c1's reaches c2
        c2.send("ClientGetQueue")
        q = c2.expect("BackendGetQueue")
        assert q["jobs_running"] == () and q["jobs_waiting"] == (), q
        a.close()
        c2.close()
    on_backend(be, SLOW_PINGS, run)


def test_mixed_fleet_queue_and_environments(be):
    """A fleet of both dialects: both clients are sent the union of both agents'
    environments (each type and name once, in the order the agents announced them, as
    INGInious lists them), and it shrinks when the native agent leaves;
    ClientGetQueue, asked in either dialect, lists the running jobs of both dialects on
    agents of both dialects and the waiting jobs of both clients, with is_current_client_job
    from the asker's point of view; results go back to the right client across dialects."""
    zc, _ = hello_client(be.client_addr)
    nc, _ = native_hello_client(be.client_addr)
    za = hello_agent(be.agent_addr, name="Z", slots=1,
                     envs={"docker": {"zonly": INFO, "default": INFO},
                           "mcq": {"mcq": INFO}})
    zmq_envs_until(zc, {"docker": ("zonly", "default"), "mcq": ("mcq",)})
    na = native_hello_agent(be.agent_addr, "N", 1,
                            {"docker": {"nonly": INFO, "default": INFO, "aaa": INFO},
                             "hidden-type": {"h": dict(INFO, advertised=False)}})
    union = {"docker": ("zonly", "default", "nonly", "aaa"), "hidden-type": (),
             "mcq": ("mcq",)}
    zmq_envs_until(zc, union)
    native_envs_until(nc, union)
    # One job of each client on each agent (of the other dialect), then one waiting each.
    native_new_job(nc, "n-on-z", env="zonly", state="SNZ")
    j = za.expect("BackendNewJob")
    assert j["job_id"] == "n-on-z" and j["inputdata"] == {"@state": "SNZ"}, j
    new_job(zc, "z-on-n", env="nonly", state="SZN")
    t, body = na.recv()
    assert t == 0x30 and NPeer.str_at(body, 0)[0] == "z-on-n", (hex(t), body[:40])
    na.send(0x41, s_("z-on-n"))
    assert zc.expect("BackendJobStarted")["job_id"] == "z-on-n"
    new_job(zc, "z-wait", env="zonly", time_limit=7)
    zc.send("ClientGetQueue")  # zc's messages are handled in order: z-wait is queued
    assert [w[0] for w in zc.expect("BackendGetQueue")["jobs_waiting"]] == ["z-wait"]
    native_new_job(nc, "n-wait", env="nonly", time_limit="9")
    nc.send(0x13, b"")
    running_n, waiting_n = native_queue(nc.expect(0x24))
    zc.send("ClientGetQueue")
    q = zc.expect("BackendGetQueue")
    running_z, waiting_z = q["jobs_running"], q["jobs_waiting"]
    for r in running_z + running_n:
        assert abs(r[5] - time.time()) < 60, r
    assert [r[:5] + r[6:] for r in running_z] == [
        ("n-on-z", False, "Z", "c/t", "L-native", 12),
        ("z-on-n", True, "N", "c/t", "Frontend - alice", 30)], running_z
    assert [r[:5] + r[6:] for r in running_n] == [
        ("n-on-z", True, "Z", "c/t", "L-native", 12),
        ("z-on-n", False, "N", "c/t", "Frontend - alice", 30)], running_n
    assert [r[5] for r in running_z] == [r[5] for r in running_n]
    assert waiting_z == (("z-wait", True, "c/t", "Frontend - alice", 7),
                         ("n-wait", False, "c/t", "L-native", 9)), waiting_z
    assert waiting_n == (("z-wait", False, "c/t", "Frontend - alice", 7),
                         ("n-wait", True, "c/t", "L-native", 9)), waiting_n
    # Results cross back: Z's result to the native client, N's to the ZeroMQ client; each
    # freed slot takes the waiting job of its environment.
    za.send("AgentJobDone", **done_fields("n-on-z"))
    body = nc.expect(0x22)
    assert NPeer.str_at(body, 0)[0] == "n-on-z"
    assert za.expect("BackendNewJob")["job_id"] == "z-wait"
    na.send(0x42, native_result("z-on-n", state="S3"))
    d = zc.expect("BackendJobDone")
    assert d["job_id"] == "z-on-n" and tuple(d["result"]) == ("success", "fine"), d
    assert d["state"] == "S3" and d["grade"] == 50.0, d
    t, body = na.recv()
    assert t == 0x30 and NPeer.str_at(body, 0)[0] == "n-wait", (hex(t), body[:40])
    # The native agent leaves (TCP close): its environments leave the union, Z's stay.
    na.close()
    left = {"docker": ("zonly", "default"), "mcq": ("mcq",)}
    zmq_envs_until(zc, left)
    native_envs_until(nc, left)
    za.send("AgentJobDone", **done_fields("z-wait"))
    d = zc.recv(skip=("Ping", "BackendUpdateEnvironments"))
    assert d["@type"] == "BackendJobDone" and d["job_id"] == "z-wait", d
    za.close()
    zc.close()
    nc.close()


# The native agent's leaving must show at once (not after --env-grace, our default of 1 s that
# lets a reconnecting agent cause one update): Z, which this test does not read, is removed
# for missed pings after 0.6 s.
test_mixed_fleet_queue_and_environments.backend_args = ("--env-grace", "0")


def test_backend_restart(be):
    """§6.45: after a restart a stock client's Ping is answered Unknown."""
    c, _ = hello_client(be.client_addr)
    addr = be.client_addr
    be.stop()
    be2 = Backend("--ping-interval", "100ms")
    try:
        c2 = ZPeer(be2.client_addr)
        c2.send("Ping")
        c2.expect("Unknown")
        c2.send("ClientHello", name="me")
        assert c2.expect("BackendUpdateEnvironments")["available_environments"] == {}
    finally:
        be2.stop()
    assert addr


def main():
    tests = [v for k, v in sorted(globals().items()) if k.startswith("test_")]
    passed = failed = 0
    for t in tests:
        be = Backend("--ping-interval", "100ms", "--ping-max", "5", *getattr(t, "backend_args", ()))
        ok = False
        try:
            t(be)
            ok = True
        except Exception:
            traceback.print_exc()
        rc = be.stop()
        if ok and rc not in (0, None):
            print("backend exit status %s" % rc)
            ok = False
        if ok:
            passed += 1
            print("ok   %s" % t.__name__)
        else:
            failed += 1
            print("FAIL %s\n--- backend log ---\n%s" % (t.__name__, be.logtext()[-4000:]))
    print("%d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
