"""The one error type for user mistakes (bad specs, bad commands)."""


class SpecError(ValueError):
    """A user mistake: carries the key path that is wrong and a hint on how to fix it.

    Printed by the CLI and the Snakefile in one line, without a traceback.
    """

    def __init__(self, key: str, problem: str, hint: str = ""):
        self.key = key
        self.problem = problem
        self.hint = hint
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = f"{self.key}: " if self.key else ""
        tail = f" ({self.hint})" if self.hint else ""
        return f"{where}{self.problem}{tail}"
