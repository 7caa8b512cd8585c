"""What a malicious file would carry: an object whose unpickling runs code."""


class Payload:
    """Unpickling this runs `code` (Python source)."""

    def __init__(self, code: str) -> None:
        self.code = code

    def __reduce__(self):
        return exec, (self.code,)


def touching(marker) -> Payload:
    """A payload that creates the file `marker` when it runs: the proof that it ran."""
    return Payload(f"open({str(marker)!r}, 'w').close()")
