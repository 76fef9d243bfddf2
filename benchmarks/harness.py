"""What the benchmarks share: peak-memory probes (Linux `/proc`; each benchmark measures in a fresh subprocess, so the
counters are that process's own), defaults that depend on `--quick`, and the `--help` formatter."""

import argparse


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter, argparse.RawDescriptionHelpFormatter):
    """The rule of `transformers_mgaclap.utils.cli.HelpFormatter` (every option's default in `--help`: appended unless
    the help text states it, which it must for a `None` default), repeated here because importing the package
    imports torch: a parent that spawns measured workers must stay small, as Linux children inherit the parent's
    peak RSS (`ru_maxrss`) through exec."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if action.required or action.default is None or "default" in text.lower():
            return text
        return super()._get_help_string(action)


def status_kib(field: str) -> int:
    """A `/proc/self/status` field in KiB, e.g. `VmRSS` (current) or `VmHWM` (peak)."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak_rss() -> bool:
    """Reset VmHWM to the current RSS (`clear_refs` 5, Linux >= 4.0); False where the kernel does not allow it."""
    try:
        with open("/proc/self/clear_refs", "w") as clear_refs:
            clear_refs.write("5")
    except OSError:
        return False
    return abs(status_kib("VmHWM") - status_kib("VmRSS")) <= 1024


def fill_defaults(args: argparse.Namespace, defaults: dict[str, tuple]) -> argparse.Namespace:
    """Set every argument left `None` to its `(default, quick default)` pair's value for `args.quick`."""
    for name, (default, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else default)
    return args
