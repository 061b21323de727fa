#!/usr/bin/env python3
"""A dynamic inventory script (the script plugin's --list / --host protocol)."""
import json
import sys

DATA = {
    "web": {"hosts": ["s1", "s2"], "vars": {"ansible_user": "scripted"}},
    "db": {"hosts": ["s3"]},
    "_meta": {"hostvars": {"s1": {"ansible_host": "10.6.0.1"}, "s3": {"ansible_port": 2203}}},
}
if len(sys.argv) > 1 and sys.argv[1] == "--host":
    print(json.dumps(DATA["_meta"]["hostvars"].get(sys.argv[2], {})))
else:
    print(json.dumps(DATA))
