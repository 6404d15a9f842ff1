"""Shared pytest set-up: the cross-language tests run only on fixtures the Rust side wrote."""

import os

# `tests/crosslang` checks fixtures that `cargo test -p tests --test python_actor` writes and then runs pytest on
# with PROXIMA_CROSSLANG_DIR set; without it there is nothing to compare against.
collect_ignore = [] if os.environ.get("PROXIMA_CROSSLANG_DIR") else ["crosslang"]
