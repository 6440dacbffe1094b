#!/usr/bin/env python3
"""Reruns findings 1, 3 and 6 of issue 16 against a pufa-server binary
(fresh temp data dir, loopback). Usage: signins_and_floods.py PATH/TO/pufa-server"""
import json, os, subprocess, sys, tempfile, threading, time, urllib.request, urllib.error, uuid

exe = sys.argv[1]
d = tempfile.mkdtemp()
p = subprocess.Popen([exe, "--data", d, "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
for line in p.stdout:
    if "listening" in line and "addr=" in line:
        addr = line.split("addr=")[1].split()[0]; break
threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
base = f"http://{addr}"
admin = open(os.path.join(d, "admin.token")).read().strip()
def call(method, path, token=None, body=None):
    data = None if body is None else json.dumps(body).encode()
    h = {"Content-Type": "application/json"}
    if token: h["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data, method=method, headers=h)
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
tree = [{"code": "d", "name": "区", "type": "district", "parent": None},
        {"code": "s1", "name": "甲街道", "type": "street", "parent": "d"},
        {"code": "s2", "name": "乙街道", "type": "street", "parent": "d"},
        {"code": "c1", "name": "甲社区", "type": "community", "parent": "s1"}]
call("PUT", "/v1/admin/org-units", admin, tree)
pw = "correct horse battery staple"
st, _ = call("POST", "/v1/admin/accounts", admin, {"username": "wang", "password": pw, "role": "coordinator", "org_unit": "d", "display_name": "王"})
assert st == 201, st
out = {"server": exe}

# 1. 200 sign-ins released together, the last with the right password.
barrier = threading.Barrier(200)
answers = [None] * 200
def signin(i):
    body = {"username": "wang", "password": pw if i == 199 else f"wrong password {i}"}
    barrier.wait()
    answers[i] = call("POST", "/v1/sessions", None, body)[0]
ts = [threading.Thread(target=signin, args=(i,)) for i in range(200)]
[t.start() for t in ts]; [t.join() for t in ts]
out["f1_401_checked"] = answers.count(401)
out["f1_429"] = answers.count(429)
out["f1_last_answer"] = answers[199]

# 6. 1,200 sign-ins with made-up usernames, and a real one among them.
call("POST", "/v1/admin/accounts", admin, {"username": "li", "password": pw, "role": "coordinator", "org_unit": "d", "display_name": "李"})
res = []
def junk(i):
    res.append(call("POST", "/v1/sessions", None, {"username": f"nobody{i}", "password": "x" * 20})[0])
ts = [threading.Thread(target=junk, args=(i,)) for i in range(1200)]
[t.start() for t in ts]
time.sleep(0.5)
t0 = time.time(); st, _ = call("POST", "/v1/sessions", None, {"username": "li", "password": pw}); real = time.time() - t0
[t.join() for t in ts]
out["f6_real_signin_status"] = st
out["f6_real_signin_secs"] = round(real, 2)
out["f6_junk_401"] = res.count(401); out["f6_junk_429"] = res.count(429)

# 3. street A pushes 100 x 1,000 junk mutations; what street B's coordinator sees.
tok = lambda role, org: json.loads(call("POST", "/v1/admin/tokens", admin, {"role": role, "org_unit": org, "label": "x"})[1])
a, b, cb = tok("field", "s1"), tok("field", "s2"), tok("coordinator", "s2")
m = {"id": str(uuid.uuid4()), "record_id": str(uuid.uuid4()), "kind": "lecture", "base_seq": 0,
     "hlc": {"ms": 1593561600000, "c": 0, "node": b["device_id"]},
     "set": {"org_unit": "nowhere", "held_on": "2020-06-01", "title": "t", "attendees": 1}}
call("POST", "/v1/sync/push", b["token"], {"device_id": b["device_id"], "mutations": [m]})
before = len(json.loads(call("GET", "/v1/rejections", cb["token"])[1]))
t0 = time.time()
for k in range(100):
    ms = [{"id": str(uuid.uuid4()), "record_id": str(uuid.uuid4()), "kind": "lecture", "base_seq": 0,
           "hlc": {"ms": 1593561600000 + k, "c": i, "node": a["device_id"]},
           "set": {"org_unit": "c1", "held_on": "2020-06-01", "title": "t", "attendees": 1, "colour": "x"}} for i in range(1000)]
    st, _ = call("POST", "/v1/sync/push", a["token"], {"device_id": a["device_id"], "mutations": ms})
out["f3_b_sees_before"] = before
out["f3_b_sees_after"] = len(json.loads(call("GET", "/v1/rejections", cb["token"])[1]))
out["f3_flood_secs"] = round(time.time() - t0, 1)
print(json.dumps(out))
p.kill()
