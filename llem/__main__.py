"""`python -m llem ...` (vLLM spawns processes, so the entry point is guarded)."""

from llem.app import main

if __name__ == "__main__":
    main()
