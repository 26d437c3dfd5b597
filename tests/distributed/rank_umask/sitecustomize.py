"""Imported at interpreter start when this folder is on PYTHONPATH (tests only): every process whose RANK is not
0 creates files with umask 027 (mode 0640) instead of 022 (0644), so a test can tell afterwards which rank wrote a
file, Rust and C writers (Arrow, tokenizers) included: the kernel applies the umask to every creat(). Files made
through a private temporary (mkstemp: 0600 whatever the umask) cannot be told apart."""

import os

os.umask(0o022 if os.environ.get("RANK", "0") == "0" else 0o027)
