"""A target with a bug in build: what the error boundary does with an exception nobody foresaw."""

from tests.crashing_target import CrashingTarget


class BuggyTarget(CrashingTarget):
    name, summary, ships = "buggy", "divides by zero", True

    def build(self, job, folder, log):
        (folder / "half-written.bin").write_bytes(b"\0" * 10)
        return 1 / 0


TARGET = BuggyTarget()
