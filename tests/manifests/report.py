"""One output line per checked object and the final "N passed, M failed" count."""

from __future__ import annotations



class Report:
    """Collects one line per checked object and the final count."""

    def __init__(self):
        self.passed = 0
        self.failed = 0

    def ok(self, what: str, detail: str = "") -> None:
        self.passed += 1
        print(f"ok    {what}" + (f" ({detail})" if detail else ""), flush=True)

    def fail(self, what: str, why: str) -> None:
        self.failed += 1
        print(f"FAIL  {what}: {why}", flush=True)

    def check(self, what: str, problems: list[str], detail: str = "") -> bool:
        if problems:
            self.fail(what, "; ".join(problems))
            return False
        self.ok(what, detail)
        return True
