#!/usr/bin/env python3
"""summarize-log.py LOG [--shape]

Print a logwrap.sh log (one JSON object per line) compactly, one call per
line, in start-time order:  caller  verb  flags (paths shortened)  stdio  rc.

--shape  print only the distinct "shapes" of calls (caller + argv with ids,
         paths and numbers replaced by placeholders) with counts, which is the
         easiest way to diff what two runtimes were asked to do.
"""
import json, re, sys
from collections import Counter


def short(a, cid):
    if cid and a == cid:
        return "<id>"
    if a.startswith("/") or "/" in a:
        pre = ""
        if a.startswith("--") and "=" in a:
            pre, a = a.split("=", 1)
            pre += "="
        base = a.rstrip("/").rsplit("/", 1)[-1]
        if cid and base == cid:
            return pre + ".../<id>"
        base = re.sub(r"[0-9a-f]{12,}", "<hex>", base)
        base = re.sub(r"^conmon-term\.\w+$", "conmon-term.<r>", base)
        base = re.sub(r"^pty\d+$", "pty<n>", base)
        base = re.sub(r"^[\w-]+\.pid$", lambda m: m.group(0) if m.group(0) in ("init.pid",) else "<exec-id>.pid", base)
        base = re.sub(r"\d{5,}", "<n>", base)
        return pre + ".../" + base
    return re.sub(r"^[0-9a-f]{64}$", "<id>", a)


def caller_of(d):
    ca = d.get("caller_args", "")
    if " container cleanup" in ca:
        return "podman(cleanup)"
    if "-publish-binary" in ca and ca.rstrip().endswith("delete"):
        return "shim(delete)"
    if "containerd-shim" in d.get("caller", ""):
        return "shim"
    return d.get("caller", "?")


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    shape = "--shape" in sys.argv
    if not args:
        sys.exit(__doc__)
    rows = [json.loads(l) for l in open(args[0]) if l.strip()]
    rows.sort(key=lambda d: d["t0"])
    shapes = Counter()
    for d in rows:
        cid = d.get("id") or ""
        argv = [short(a, cid) for a in d["argv"]]
        argv = [re.sub(r"conformance_containerd_\w+$", "<ns>", a) for a in argv]
        std = "in=%s out=%s err=%s" % (d["stdin"].split(":")[0], d["stdout"].split(":")[0], d["stderr"].split(":")[0])
        if shape:
            shapes[(caller_of(d), " ".join(argv), std)] += 1
            continue
        rc = d.get("rc", "-")
        out = d.get("out", "")
        print("%-16s %-90s %s rc=%s%s" % (caller_of(d), " ".join(argv), std, rc,
                                          (" out=" + out[:60].replace("\n", "|")) if out else ""))
    if shape:
        for (c, a, s), n in sorted(shapes.items(), key=lambda x: (x[0][0], x[0][1])):
            print("%4d  %-16s %s   [%s]" % (n, c, a, s))


if __name__ == "__main__":
    main()
