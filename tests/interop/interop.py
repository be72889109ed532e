#!/usr/bin/env python3
"""Interoperability of inginious-backend with stock INGInious peers over ZeroMQ.

The peers here are what INGInious' own client and agents are on the wire: pyzmq DEALER
sockets (no identity) sending one-frame msgpack maps with "@type" (reference §1.2, §2.1).
Mixed fleets use the native protocol (proto.md) through a tiny Python peer.

Usage: interop.py BUILD_DIR   (prints "N passed, M failed"; exit 1 on failure)
Every wait is bounded; the backend is started on 127.0.0.1 port 0 and stopped by PID.
"""
import os
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


class ZPeer:
    """A stock INGInious peer: a DEALER with no identity, msgpack maps."""

    def __init__(self, addr):
        self.s = CTX.socket(zmq.DEALER)
        self.s.setsockopt(zmq.LINGER, 0)
        self.s.setsockopt(zmq.IPV6, 1)
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

    @staticmethod
    def str_at(body, off):
        n = struct.unpack(">I", body[off:off + 4])[0]
        return body[off + 4:off + 4 + n].decode(), off + 4 + n


# ---- scenarios (reference §6) -------------------------------------------------------------

def test_registration_gate(be):
    """§6.1–3: Ping and ClientNewJob before hello get Unknown; hello gets the map; Ping→Pong."""
    c = ZPeer(be.client_addr)
    c.send("Ping")
    c.expect("Unknown")
    new_job(c, "j0")
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
    """A job from a native client runs on a ZeroMQ agent; the queue shows both."""
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
    a.send("AgentJobDone", **done_fields("nz"))
    while True:
        t, body = c.recv()
        if t == 0x22:
            break
    assert NPeer.str_at(body, 0)[0] == "nz"


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
        be = Backend("--ping-interval", "100ms", "--ping-max", "5")
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
