"""Console output of the library and the recipes (`setup_logging`, `progress_bars_enabled`).

Library and recipes log through `accelerate.logging.get_logger` under the `iecl_hf` logger: the main process only,
unless a call passes `main_process_only=False`. `setup_logging(log_level)` sets that logger's level; its messages go
to stdout (debug, info) and stderr (warnings and errors, prefixed `WARNING:` / `ERROR:`), with accelerate's
`[RANK n]` prefix only when several processes run."""

import logging
import re
import sys

LOGGER_NAME = "iecl_hf"
LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_RANK_PREFIX = re.compile(r"^\[RANK \d+\] ")


class _ConsoleHandler(logging.StreamHandler):
    """A handler on `sys.stdout` or `sys.stderr` as they are when a record comes (not when the handler was made), so
    that output redirected later (pytest's capture, `contextlib.redirect_stdout`) gets the messages."""

    def __init__(self, stream_name: str):
        self.stream_name = stream_name
        super().__init__()

    @property
    def stream(self):
        return getattr(sys, self.stream_name)

    @stream.setter
    def stream(self, value):  # StreamHandler.__init__ / setStream: the stream is always the current sys one
        pass


class _ConsoleFormatter(logging.Formatter):
    """The message alone (with `WARNING: ` / `ERROR: ` before warnings and errors), without accelerate's
    `[RANK n] ` in a single-process run, where it says nothing."""

    def format(self, record):
        message = super().format(record)
        if _RANK_PREFIX.match(message) and _num_processes() == 1:
            message = _RANK_PREFIX.sub("", message, count=1)
        return f"{record.levelname}: {message}" if record.levelno >= logging.WARNING else message


def _num_processes() -> int:
    from accelerate.state import PartialState

    return PartialState().num_processes if PartialState._shared_state else 1


def setup_logging(log_level: str = "info"):
    """Console output at `log_level` (debug | info | warning | error): the `iecl_hf` logger's level and
    handlers (info and debug to stdout, warnings and errors to stderr; set again on each call, not added twice).

    The other libraries: debug also shows transformers', datasets' and accelerate's info messages; warning and error
    set them to that level and hide datasets' and the Hub's progress bars (and ours, `progress_bars_enabled`); info
    leaves them as they are (their defaults, or TRANSFORMERS_VERBOSITY / DATASETS_VERBOSITY)."""
    if log_level not in LEVELS:
        raise ValueError(f"`log_level` {log_level!r} is not supported; allowed values: {', '.join(LEVELS)}.")
    level = LEVELS[log_level]
    logger = logging.getLogger(LOGGER_NAME)
    for handler in [h for h in logger.handlers if isinstance(h, _ConsoleHandler)]:
        logger.removeHandler(handler)
    stdout, stderr = _ConsoleHandler("stdout"), _ConsoleHandler("stderr")
    stdout.addFilter(lambda record: record.levelno < logging.WARNING)
    stderr.setLevel(logging.WARNING)
    for handler in (stdout, stderr):
        handler.setFormatter(_ConsoleFormatter("%(message)s"))
        logger.addHandler(handler)
    logger.setLevel(level)
    logger.propagate = False  # printed once, whatever handlers the root logger has
    if level == logging.INFO:
        return
    from datasets.utils import logging as datasets_logging
    from transformers.utils import logging as transformers_logging

    libraries = logging.INFO if level == logging.DEBUG else level
    transformers_logging.set_verbosity(libraries)
    datasets_logging.set_verbosity(libraries)
    logging.getLogger("accelerate").setLevel(libraries)
    if level >= logging.WARNING:
        datasets_logging.disable_progress_bar()
        transformers_logging.disable_progress_bar()  # the Hub's download bars


def progress_bars_enabled() -> bool:
    """Whether our progress bars show (on the main process: the caller checks that): not when `setup_logging` set
    warning or error; yes when no recipe set a level (library use)."""
    level = logging.getLogger(LOGGER_NAME).level
    return level == logging.NOTSET or level < logging.WARNING
