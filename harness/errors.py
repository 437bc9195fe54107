"""The errors a user can cause or meet: each is one line that names the file and the key.

Where they are caught: ``harness.cli.main`` prints the line and exits with the error's
``exit_code``; the pytest plugin (ci/pytest_plugin.py) turns them into a usage error, a collection
error or a failed step, again one line; bisect (bisect/predicate.py, bisect/command.py) judges a
revision by them (an `InfrastructureError` or a revision's missing `call:` target skips it);
the bundle's command line (bundle/) reports them as cli does. Library code lets them through.
"""


class HarnessError(Exception):
    """Base class: bad input or a broken environment, reported as one line."""

    exit_code = 2

    def lines(self) -> list[str]:
        """What the command line prints, one ``error:`` line each."""
        return [str(self)]


class ScenarioError(HarnessError):
    """A scenario file is unreadable or invalid. The message names the file and key path."""

    def __init__(self, path, key: str | None, message: str):
        self.path, self.key = str(path), key
        where = f"{self.path}: {key}: " if key else f"{self.path}: "
        super().__init__(where + message)


class ScenarioErrors(ScenarioError):
    """Several mistakes in one scenario file, found in one pass (`validate`, a run): one line each."""

    def __init__(self, errors: list[ScenarioError]):
        self.errors = [x for e in errors for x in getattr(e, "errors", [e])]  # one flat list, one line each
        HarnessError.__init__(self, "\n".join(str(e) for e in self.errors))
        self.path, self.key = self.errors[0].path, self.errors[0].key

    def lines(self) -> list[str]:
        return [str(e) for e in self.errors]


class InputError(HarnessError):
    """A JUnit file, run directory or other argument cannot be used."""


class InfrastructureError(HarnessError):
    """The machine cannot run the job (results directory not writable, interpreter broken...)."""

    exit_code = 3
