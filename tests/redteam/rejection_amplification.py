#!/usr/bin/env python3
"""Finding 2 of issue 16, at the issue's scale: 20 pushes of one mutation
with a 7.5 MiB `notes`, rejected invalid_field; then the store's growth,
one GET /v1/rejections's size, and the server's RSS before and after four
listings at once. Usage: rejection_amplification.py PATH/TO/pufa-server"""
import json, os, subprocess, sys, tempfile, time, urllib.request, uuid, threading

exe = sys.argv[1]
d = tempfile.mkdtemp()
p = subprocess.Popen([exe, "--data", d, "--listen", "127.0.0.1:0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
addr = None
for line in p.stdout:
    if "listening" in line and "addr=" in line:
        addr = line.split("addr=")[1].split()[0]; break
threading.Thread(target=lambda: [None for _ in p.stdout], daemon=True).start()
base = f"http://{addr}"
admin = open(os.path.join(d, "admin.token")).read().strip()
def call(method, path, token, body=None):
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(base + path, data=data, method=method, headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"})
    with urllib.request.urlopen(req) as r:
        return r.read()
def du(path):
    return sum(os.path.getsize(os.path.join(r, f)) for r, _, fs in os.walk(path) for f in fs)
def rss():
    for l in open(f"/proc/{p.pid}/status"):
        if l.startswith("VmRSS"): return int(l.split()[1]) // 1024
call("PUT", "/v1/admin/org-units", admin, [{"code": "d", "name": "区", "type": "district", "parent": None}, {"code": "s1", "name": "街道", "type": "street", "parent": "d"}])
tok = json.loads(call("POST", "/v1/admin/tokens", admin, {"role": "field", "org_unit": "s1", "label": "x"}))
dev, token = tok["device_id"], tok["token"]
call("POST", "/v1/admin/tokens", admin, {"role": "coordinator", "org_unit": "d", "label": "c"})
before = du(d)
notes = "x" * (7 * 1024 * 1024 + 512 * 1024)
t0 = time.time()
for i in range(20):
    m = {"id": str(uuid.uuid4()), "record_id": str(uuid.uuid4()), "kind": "lecture", "base_seq": 0,
         "hlc": {"ms": 1593561600000 + i, "c": 0, "node": dev},
         "set": {"org_unit": "s1", "held_on": "2020-06-01", "title": "t", "attendees": 1, "notes": notes}}
    r = json.loads(call("POST", "/v1/sync/push", token, {"device_id": dev, "mutations": [m]}))
    assert r["results"][0]["status"] == "rejected", r
secs = time.time() - t0
time.sleep(1.5)  # let sled's flusher write what it holds
grown = du(d) - before
rss0 = rss()
listing = call("GET", "/v1/rejections", admin)
rss1 = rss()
ts = [threading.Thread(target=lambda: call("GET", "/v1/rejections", admin)) for _ in range(4)]
[t.start() for t in ts]; [t.join() for t in ts]
rss4 = rss()
print(json.dumps({"server": exe, "pushes_secs": round(secs, 1), "store_grew_mib": round(grown / 2**20, 1),
                  "listing_bytes": len(listing), "rss_mib_before_listing": rss0, "after_one": rss1, "after_four_at_once": rss4}))
p.kill()
