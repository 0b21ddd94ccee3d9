#!/usr/bin/env python3
# Description: libpp.so exports exactly the functions pp.h declares PP_EXPORT (libpp.map lists them one by one).
import re, subprocess, sys

header, lib = sys.argv[1], sys.argv[2]
text = open(header).read()
declared = set(re.findall(r'PP_EXPORT[^;(]*?\b(pp_[a-z0-9_]+)\s*\(', text))
out = subprocess.run(['nm', '-D', '--defined-only', lib], capture_output=True, text=True, check=True).stdout
exported = {l.split()[-1].split('@')[0] for l in out.splitlines() if ' T ' in l}
missing, extra = declared - exported, exported - declared
if missing:
    print('declared in pp.h but not exported:', ' '.join(sorted(missing)))
if extra:
    print('exported but not declared in pp.h:', ' '.join(sorted(extra)))
print(f'{len(declared)} declared, {len(exported)} exported')
sys.exit(1 if missing or extra or not declared else 0)
