"""llem: measure the energy, speed and latency of LLM inference."""


def _version() -> str:
    """The installed distribution's version (set from the git tag at build time, hatch-vcs); a source tree
    on PYTHONPATH without an installed llem says so rather than guessing."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("llem")
    except PackageNotFoundError:
        return "0+unknown"


__version__ = _version()
