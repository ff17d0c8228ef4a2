"""Every Redis key balloons uses, in one place.

A job id is ``POOL.ULID`` (``default.01jd3x9k2m8v...``), so any process can find every key of
a job from its id alone. All keys of one pool share the hash tag ``{POOL}``, so each atomic
script touches a single hash slot, on a single server or on a Redis (Valkey) Cluster, where
each pool's keys live on the node that serves its slot (``tests/test_cluster.py`` runs pools
on three nodes). ``NS`` is the app's namespace (default ``balloons``).

=======================================  ======  ==========  =================================
key                                      type    TTL         written by
=======================================  ======  ==========  =================================
``NS:pools``                             set     none        client at submit (pool names;
                                                             once per pool per 10 s)
``NS:{POOL}:job:ULID``                   hash    record TTL  client (submit), worker (claim,
                                                             finish), reaper (lost)
``NS:{POOL}:attempts:ULID``              hash    record TTL  same scripts: attempt n -> JSON
                                                             (the first from its first change)
``NS:{POOL}:done:ULID``                  list    record TTL  finish script: one token, rotated
                                                             by waiters with ``BLMOVE``
``NS:{POOL}:runs:ULID``                  string  record TTL  claim, take, end and cancel scripts:
                                                             ``CLAIMED ENDED``, the highest
                                                             attempt claimed and ended (a
                                                             replay is refused), kept a while
                                                             past the payload's TTL
``NS:{POOL}:jobs``                       zset    trimmed     submit: job ULID by created time
``NS:{POOL}:queue``                      zset    none        jobs waiting for a machine, by
                                                             priority then arrival
``NS:{POOL}:delayed``                    zset    none        jobs (and retries) by due time
``NS:{POOL}:slots``                      zset    none        one member per machine of the pool
                                                             (``ULID-ATTEMPT``), scored by the
                                                             end of its lease (heartbeat)
``NS:{POOL}:slot``                       hash    none        slot -> JSON: job, attempt,
                                                             machine, size, state, deadline
``NS:{POOL}:idle``                       set     none        slots waiting for work
``NS:{POOL}:wake``                       list    none        one token per job handed to an
                                                             idle machine (``BLPOP``)
``NS:{POOL}:wake:TAG``                   list    1 day       the same, for the idle machines of
                                                             one compatibility tag
``NS:{POOL}:cfg``                        hash    none        cap, idle timeout, floor, boot
                                                             timeout, heartbeat (last submit;
                                                             ``conf``: them all, signed, ``sig
                                                             HEX`` last); ``v:KEYID``: the
                                                             current version of that key's jobs
``NS:{POOL}:seq``                        string  none        submit: arrival counter for queue
                                                             order
``NS:{POOL}:key:SHA``                    string  record TTL  idempotency key -> job ULID
``NS:{POOL}:logs:ULID``                  stream  record TTL  worker (``APPEND_LOGS`` script,
                                                             batched): one entry per line:
                                                             ``t`` time,
                                                             ``a`` attempt, ``s`` out/err/log,
                                                             ``m`` text; capped (MAXLEN)
``NS:{POOL}:usage``                      hash    none        ``TAKE``: idle machine-seconds of
                                                             warm machines, ``idle:CPUS:MB``
``NS:{POOL}:standby``                    hash    none        stopped machines kept to be
                                                             started again: machine id -> JSON
                                                             (slot ULID, cpus, mem, since);
                                                             ``TAKE`` adds, ``PICK_MACHINE`` takes,
                                                             ``TRIM_STANDBY`` drops (gc)
``NS:{POOL}:stats``                      hash    none        the scripts that end attempts
                                                             (and ``CLAIM``: boot time): running
                                                             aggregates for ``/metrics``, see
                                                             below
``NS:{POOL}:spend``                      hash    none        the scripts that end attempts:
                                                             billed machine-milliseconds by
                                                             hour and size, a ring of
                                                             :data:`SPEND_HOURS` hours, see
                                                             below
``NS:{POOL}:check``                      string  2 s         a waiter checking the pool's
                                                             machines for its waiting job
                                                             (the others skip it meanwhile)
``NS:machine:MID``                       hash    record TTL  local fork server: launch and exit
``NS:machines``                          zset    trimmed     local fork server: MID by launch time
``NS:gc-lock``                           string  seconds     the supervisor sweeping orphans
``NS:{POOL}:meta:ULID``                  string  record TTL  service: the job's kind and labels
                                                             (JSON), written after its submit
``NS:{POOL}:hook:ULID``                  hash    record TTL  service: the job's callback
                                                             (tagged spec, its deliveries,
                                                             ``n`` attempts, ``state``)
``NS:{POOL}:outbox``                     zset    none        jobs with a callback -> when its
                                                             next delivery is due (``+inf``
                                                             until the job ends: the scripts
                                                             that end a job make it due)
``NS:service:keys``                      hash    none        service: API key digest -> JSON
                                                             (name, scopes, created)
``NS:service:idem:SHA``                  string  24 h        service: an Idempotency-Key of one
                                                             API key -> JSON (body digest, job,
                                                             pending or done)
``NS:schedules``                         set     none        supervisor: the names of the
                                                             schedules it has seen
``NS:schedule:NAME``                     hash    none        supervisor (each due run), CLI
                                                             (pause/resume): ``paused``,
                                                             ``last_due``, ``last_job``,
                                                             ``last_missed``, ``missed``
=======================================  ======  ==========  =================================

Job hash fields: ``payload`` (signed JSON: task, module, options, record TTL), ``args``
(serialized arguments), ``sig`` (HMAC-SHA256 hex of payload and args), ``status``,
``attempt``, ``machine``, ``created``, ``started``, ``finished``, ``result``, ``error`` (JSON:
type, message, traceback), ``reason``, ``ttl``, ``qscore`` (queue order), ``need``
(``CPUS:MB``), ``compat`` (its compatibility tag, ``KEYID.VERSION``: the machines that may
take it, :mod:`balloons.compat`), ``passed`` (the key id of a machine that left it for
another key's), ``slot`` (the slot running it), ``due`` (when delayed), ``progress`` (0..1),
``note`` (the task's last :func:`balloons.progress`) and ``hook`` (set when the job has a
callback: the scripts that end it put it in the pool's ``outbox``); ``rsig``, ``esig`` and
``psig`` tag the result, the error and the progress for one attempt, and ``grant`` permits a
retry's attempt (:mod:`balloons.signing`).

Fields of a pool's ``stats`` hash (``TASK`` last, as the task's name in the payload when it
is one balloons could have written, else ``?``): ``KIND:I:TASK`` counts observations in
histogram bucket ``I`` (1-based, of :data:`STAT_BUCKETS`; one past the last is ``+Inf``) and
``KIND:s:TASK`` their sum in whole milliseconds, for ``KIND`` ``queue`` (submit to first
start), ``boot`` (a slot's launch to its machine's claim), ``run`` (an attempt's start to its
end: the sum is the task-seconds) and ``e2e`` (submit to the job's end);
``n:STATUS:REASON:TASK`` counts jobs ended, ``retry:REASON:TASK`` attempts failed with a retry
scheduled, and ``ms:CPUS:MB:TASK`` adds up billed machine-milliseconds per size. They only
grow (Prometheus counters); readers treat every field as hostile
(:mod:`balloons.dashboard.aggregates`).

Fields of a pool's ``spend`` hash, for cost over time: ``CPUS:MB:I`` adds up the billed
machine-milliseconds of the attempts that ended in hour ``H`` (``floor(time / 3600)``) on
machines of that size, and ``CPUS:MB:I:h`` holds ``H``, where ``I`` is ``H`` modulo
:data:`SPEND_HOURS`: the first attempt to end in a new hour starts its place in the ring
again, so the hash keeps the last :data:`SPEND_HOURS` hours and never grows past that.

``NS:pools``, the machine records, the sweeper's lock, the schedules' state and the chains'
and groups' records are not a pool's: no script touches them. Each is read and written by
single-key commands (``SADD`` alongside a submit, plain pipelines of the fork server,
``HSETNX`` for a flow's members and end), which a cluster routes to the key's own slot.

Scripts are given their keys in ``KEYS``, by :func:`script_keys`: the pool's keys in the order
of :data:`POOL_SCRIPT_KEYS` (the scripts' ``QUEUE``, ``DELAYED``, ... name ``KEYS[1]``,
``KEYS[2]``, ...), then the keys of each job the caller names (:data:`JOB_SCRIPT_KEYS`).
A script that finds jobs in its pool's queue, delayed set or slot table (their ids are known
only inside it) makes those jobs' key names with the forms of :class:`PoolKeys`, which
:mod:`balloons.store.lua` takes from here: keys of the same pool, hence of the same hash slot.
"""

from __future__ import annotations

import re

from ..frozen import Frozen

DEFAULT_NAMESPACE = "balloons"
DEFAULT_POOL = "default"

POOL_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
ULID_RE = re.compile(r"^[0-9a-hjkmnp-tv-z]{26}$")
MACHINE_RE = re.compile(r"^[0-9a-f]{14}$")


def split_job_id(job_id: str) -> tuple[str, str]:
    """``"default.01jd..."`` -> ``("default", "01jd...")``; ``ValueError`` if malformed."""
    pool, sep, ulid = job_id.rpartition(".")
    if not sep or not POOL_RE.match(pool) or not ULID_RE.match(ulid):
        raise ValueError(
            f"{job_id!r} is not a balloons job id: expected POOL.ULID, "
            "for example 'default.01jd3x9k2m8vq4t7w0c5r6y1zh'"
        )
    return pool, ulid


class PoolKeys(Frozen):
    """Key names of one pool in one namespace."""

    __slots__ = ("ns", "pool")
    __match_args__ = ("ns", "pool")
    ns: str
    pool: str

    def __init__(self, ns: str, pool: str) -> None:
        object.__setattr__(self, "ns", ns)  # not _set: keys are made on every submit
        object.__setattr__(self, "pool", pool)

    @property
    def tag(self) -> str:
        """``NS:{POOL}``: the prefix, and hash tag, of every key of the pool."""
        return f"{self.ns}:{{{self.pool}}}"

    def job(self, ulid: str) -> str:
        """The job's hash: payload, arguments, signature, status, result, ..."""
        return f"{self.tag}:job:{ulid}"

    def attempts(self, ulid: str) -> str:
        """The job's attempts: attempt number -> JSON."""
        return f"{self.tag}:attempts:{ulid}"

    def done(self, ulid: str) -> str:
        """The job's done token, which waiters rotate with ``BLMOVE``."""
        return f"{self.tag}:done:{ulid}"

    def runs(self, ulid: str) -> str:
        """The highest attempts claimed and ended (a replay is refused)."""
        return f"{self.tag}:runs:{ulid}"

    @property
    def jobs(self) -> str:
        """The pool's jobs by creation time."""
        return f"{self.tag}:jobs"

    @property
    def queue(self) -> str:
        """The jobs waiting for a machine, by priority then arrival."""
        return f"{self.tag}:queue"

    @property
    def delayed(self) -> str:
        """The delayed jobs and retries, by due time."""
        return f"{self.tag}:delayed"

    @property
    def slots(self) -> str:
        """One member per machine of the pool, scored by the end of its lease."""
        return f"{self.tag}:slots"

    @property
    def slot(self) -> str:
        """Slot -> JSON: job, attempt, machine, size, state, deadline."""
        return f"{self.tag}:slot"

    @property
    def idle(self) -> str:
        """The slots of idle machines waiting for work."""
        return f"{self.tag}:idle"

    @property
    def wake(self) -> str:
        """The wake list of idle machines that know no compatibility tag."""
        return f"{self.tag}:wake"

    def wake_of(self, compat: str) -> str:
        """The wake list of the idle machines of one compatibility tag (``balloons.compat``)."""
        return f"{self.tag}:wake:{compat}"

    @property
    def cfg(self) -> str:
        """The pool's settings as the last submit wrote them, and each key's current version."""
        return f"{self.tag}:cfg"

    def logs(self, ulid: str) -> str:
        """The job's log stream."""
        return f"{self.tag}:logs:{ulid}"

    @property
    def seq(self) -> str:
        """The arrival counter of the queue's order."""
        return f"{self.tag}:seq"

    @property
    def usage(self) -> str:
        """Idle machine-seconds of the pool's warm machines, per size."""
        return f"{self.tag}:usage"

    @property
    def standby(self) -> str:
        """The stopped machines kept to be started again."""
        return f"{self.tag}:standby"

    @property
    def stats(self) -> str:
        """The pool's running aggregates, kept by the scripts that end attempts and jobs."""
        return f"{self.tag}:stats"

    @property
    def spend(self) -> str:
        """The pool's billed machine-milliseconds by hour and size (a ring of hours)."""
        return f"{self.tag}:spend"

    @property
    def check(self) -> str:
        """Held while a waiter checks the pool's machines for its job."""
        return f"{self.tag}:check"

    def idem(self, digest: str) -> str:
        """The job id stored under an idempotency key's digest."""
        return f"{self.tag}:key:{digest}"

    def meta(self, ulid: str) -> str:
        """The service's record of a job it submitted: its kind and labels (JSON)."""
        return f"{self.tag}:meta:{ulid}"

    def hook(self, ulid: str) -> str:
        """The job's callback: its tagged spec and deliveries (``balloons.service.callbacks``)."""
        return f"{self.tag}:hook:{ulid}"

    @property
    def outbox(self) -> str:
        """The jobs with a callback, scored by when their next delivery is due."""
        return f"{self.tag}:outbox"


class JobKeys(Frozen):
    """The keys of one job, derived from its id."""

    __slots__ = ("job_id", "pool", "ulid")
    __match_args__ = ("job_id", "pool", "ulid")
    job_id: str
    pool: PoolKeys
    ulid: str

    def __init__(self, job_id: str, pool: PoolKeys, ulid: str) -> None:
        object.__setattr__(self, "job_id", job_id)
        object.__setattr__(self, "pool", pool)
        object.__setattr__(self, "ulid", ulid)

    @classmethod
    def of(cls, ns: str, job_id: str) -> JobKeys:
        """The keys of job ``job_id`` (``POOL.ULID``) in namespace ``ns``; ``ValueError`` for a
        string that is no job id."""
        pool, ulid = split_job_id(job_id)
        return cls(job_id, PoolKeys(ns, pool), ulid)

    @classmethod
    def fresh(cls, ns: str, pool: str, ulid: str) -> JobKeys:
        """The keys of a new job: ``pool`` already checked, ``ulid`` just made (no parsing).
        The pool's keys are one record per pool, shared by its jobs (the submit path)."""
        pk = _POOLS.get((ns, pool))
        if pk is None:
            if len(_POOLS) >= 1024:
                _POOLS.clear()
            pk = _POOLS[(ns, pool)] = PoolKeys(ns, pool)
        return cls(f"{pool}.{ulid}", pk, ulid)

    @property
    def job(self) -> str:
        """The job's hash."""
        return self.pool.job(self.ulid)

    @property
    def attempts(self) -> str:
        """The job's attempts hash."""
        return self.pool.attempts(self.ulid)

    @property
    def done(self) -> str:
        """The job's done token list."""
        return self.pool.done(self.ulid)

    @property
    def logs(self) -> str:
        """The job's log stream."""
        return self.pool.logs(self.ulid)

    @property
    def runs(self) -> str:
        """The job's claimed and ended attempts."""
        return self.pool.runs(self.ulid)

    @property
    def meta(self) -> str:
        return self.pool.meta(self.ulid)

    @property
    def hook(self) -> str:
        """The job's callback record."""
        return self.pool.hook(self.ulid)


#: The pool's keys every script is given first, in ``KEYS`` order: :class:`PoolKeys`
#: properties. The scripts name them in upper case (``QUEUE = KEYS[1]``, ...).
POOL_SCRIPT_KEYS = (
    "queue", "delayed", "slots", "slot", "idle", "wake", "cfg", "standby", "jobs", "seq", "usage",
    "stats", "spend",
)  # fmt: skip
#: Upper bounds (seconds) of the buckets of the ``stats`` histograms (queue wait, boot, run,
#: end to end), which the scripts fill and ``/metrics`` reads.
STAT_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 1800.0,
    3600.0,
)  # fmt: skip
#: Hours a pool's ``spend`` hash keeps (its ring of hours: a week).
SPEND_HOURS = 168
#: The keys of each job a script is given, after the pool's, in this order: the name of the
#: function the scripts make them with, and the :class:`PoolKeys` method.
JOB_SCRIPT_KEYS = (
    ("jk", "job"), ("ak", "attempts"), ("dk", "done"), ("lk", "logs"), ("rk", "runs"),
)  # fmt: skip
#: The idempotency key's function in the scripts, and its :class:`PoolKeys` method.
IDEM_SCRIPT_KEY = ("idem", "idem")
#: The function that makes a compatibility tag's wake list in the scripts, and its method.
WAKE_SCRIPT_KEY = ("wk", "wake_of")
#: The function that makes a job's callback record in the scripts, and its method; and the
#: name of the pool's outbox there, and its property. The scripts that end a job find both
#: from the pool's tag (they say they find keys: ``lua.FINDS_JOBS``).
HOOK_SCRIPT_KEY = ("hk", "hook")
OUTBOX_SCRIPT_KEY = ("OUTBOX", "outbox")

_SCRIPT_KEYS: dict[tuple[str, str], tuple[str, ...]] = {}
_POOLS: dict[tuple[str, str], PoolKeys] = {}  # JobKeys.fresh's pools (PoolKeys is immutable)


def script_keys(pool: PoolKeys, *jobs: str, idem: str = "") -> list[str]:
    """``KEYS`` of a script run for ``pool``: the pool's keys (:data:`POOL_SCRIPT_KEYS`), the
    keys of each job ULID in ``jobs`` (:data:`JOB_SCRIPT_KEYS`; empty and repeated ones are
    skipped), and the idempotency key of digest ``idem`` if given."""
    ns, name = pool.ns, pool.pool
    base = _SCRIPT_KEYS.get((ns, name))
    if base is None:
        if len(_SCRIPT_KEYS) > 10_000:
            _SCRIPT_KEYS.clear()
        base = _SCRIPT_KEYS[(ns, name)] = tuple(getattr(pool, k) for k in POOL_SCRIPT_KEYS)
    out = list(base)
    tag, seen = pool.tag, ""
    for u in jobs:
        if u and u != seen:  # PoolKeys' forms, in JOB_SCRIPT_KEYS order (a test checks both)
            out += (
                f"{tag}:job:{u}",
                f"{tag}:attempts:{u}",
                f"{tag}:done:{u}",
                f"{tag}:logs:{u}",
                f"{tag}:runs:{u}",
            )
            seen = u
    if idem:
        out.append(pool.idem(idem))
    return out


def slot_job(slot: str) -> str:
    """The job a slot was made for, from its name (``ULID-ATTEMPT``, attempt > 0): what
    :data:`balloons.store.lua.LOST` reads when the slot's entry is unreadable. ``""`` for a slot
    named for a machine (``ID-0``) or not named by balloons."""
    ulid, sep, n = slot.rpartition("-")
    if not sep or not ulid or not n or not (n.isascii() and n.isdigit()) or n == "0":
        return ""
    return ulid


def pools_key(ns: str) -> str:
    """The set of the namespace's pool names."""
    return f"{ns}:pools"


def machine_key(ns: str, machine_id: str) -> str:
    """Local machine records are not pool-tagged: a machine id alone must find them."""
    return f"{ns}:machine:{machine_id}"


def machines_key(ns: str) -> str:
    """The local machines by launch time."""
    return f"{ns}:machines"


def gc_lock_key(ns: str) -> str:
    """Held for a few seconds by the supervisor that sweeps orphaned machines."""
    return f"{ns}:gc-lock"


def service_keys_key(ns: str) -> str:
    """The job service's API keys: SHA-256 digest of a key -> JSON (name, scopes, created);
    the keys themselves are never stored."""
    return f"{ns}:service:keys"


def service_idem_key(ns: str, digest: str) -> str:
    """One Idempotency-Key of one API key (``digest``: SHA-256 of both) in the job service."""
    return f"{ns}:service:idem:{digest}"


def schedules_key(ns: str) -> str:
    """The names of the schedules a supervisor has seen (their state: :func:`schedule_key`)."""
    return f"{ns}:schedules"


def schedule_key(ns: str, name: str) -> str:
    """One schedule's state (never its task or arguments: those are the app's code)."""
    return f"{ns}:schedule:{name}"


def flows_key(ns: str) -> str:
    """The chains and groups not ended yet, by creation time (the supervisor advances them)."""
    return f"{ns}:flows"


def flow_index_key(ns: str) -> str:
    """Every chain and group, by creation time (listings; trimmed past the record TTL)."""
    return f"{ns}:flows:all"


def flow_key(ns: str, flow_id: str) -> str:
    """One chain's or group's record (see :mod:`balloons.flows`)."""
    return f"{ns}:flow:{flow_id}"
