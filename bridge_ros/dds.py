"""The DDS backend: the bridge's ROS 2 side on Cyclone DDS, with no ROS installation.

It creates the endpoints an rmw_cyclonedds node would: topics ``rt/<name>`` with the ROS 2
DDS type names (:mod:`bridge_ros.dds_types`), the mapping's QoS, plain CDR, and on Jazzy
the ``typehash=RIHS01_…;`` USER_DATA that Iron and later use to check types. Samples travel
as CDR bytes straight between Cyclone and the rosbags (de)serialisers: no Python object
per field, arrays as views.

One thread waits on all readers (a WaitSet) and hands each sample to the bridge; writes
happen on the caller's thread. Every half second the thread also looks for endpoints that
cannot match (incompatible QoS) and for remote endpoints whose type hash differs; both are
logged once per endpoint and counted, and samples from a writer with a different hash are
dropped (counted), never decoded. Select the network with ``CYCLONEDDS_URI`` (as for ROS 2)
or the mapping's ``dds_config``.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

from cyclonedds._clayer import ddspy_take, ddspy_write
from cyclonedds.core import (DDSException, GuardCondition, InstanceState, Policy, Qos, ReadCondition, SampleState,
                             ViewState, WaitSet)
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.pub import DataWriter
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from bridge_ros.cdr import RosTypes, dds_topic_name
from bridge_ros.config import BridgeConfig, Route
from bridge_ros.dds_types import DdsTypes

log = logging.getLogger("bridge_ros.dds")

STATUS_EVERY_S = 0.5
TAKE_BATCH = 64
_ANY = SampleState.Any | ViewState.Any | InstanceState.Any

OnSample = Callable[[bytes, int], None]  # (CDR payload, DDS source timestamp ns)


def type_hash_of(user_data: bytes | None) -> str | None:
    """The ``typehash`` value in a ROS 2 endpoint's USER_DATA (``k=v;k=v;``), or None."""
    if not user_data:
        return None
    for item in user_data.decode("utf-8", "replace").split(";"):
        key, _, value = item.partition("=")
        if key.strip() == "typehash" and value:
            return value.strip()
    return None


def _user_data(qos: Any) -> bytes | None:
    try:
        policy = qos[Policy.Userdata]
    except (KeyError, ValueError, TypeError):
        return None
    return getattr(policy, "data", None)


def _delete(entity: Any) -> None:
    """Delete a cyclonedds entity now (the binding otherwise waits for garbage collection)."""
    if entity is None:
        return
    registry = type(entity)._entities
    if registry.pop(entity._ref, None) is not None:
        entity._delete(entity._ref)


class _Endpoint:
    def __init__(self, route: Route, entity: Any) -> None:
        self.route = route
        self.entity = entity
        self.incompatible_seen = 0
        self.verdicts: dict[int, bool] = {}  # remote endpoint handle -> type hash agrees


class _Reader(_Endpoint):
    def __init__(self, route: Route, entity: DataReader, on_sample: OnSample) -> None:
        super().__init__(route, entity)
        self.on_sample = on_sample


class DdsBackend:
    """Cyclone DDS endpoints for a bridge's routes; see the module docstring."""

    name = "dds"

    def __init__(self, config: BridgeConfig, types: RosTypes) -> None:
        self.config = config
        self.types = types
        self.idl = DdsTypes(types)
        # A Domain made from explicit XML must exist before the participant joins it.
        self._domain = Domain(config.domain_id, config.dds_config) if config.dds_config else None
        self.participant = DomainParticipant(config.domain_id)
        self._topics: dict[str, Topic] = {}
        self._readers: list[_Reader] = []
        self._writers: list[_Endpoint] = []
        self._waitset = WaitSet(self.participant)
        self._guard = GuardCondition(self.participant)
        self._waitset.attach(self._guard)
        self._conditions: list[ReadCondition] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self.errors = 0  # unexpected failures in the receive loop (logged; the loop goes on)

    # -- endpoints ------------------------------------------------------------------------
    def _topic(self, route: Route) -> Topic:
        name = dds_topic_name(route.ros_topic)
        topic = self._topics.get(name)
        if topic is None:
            topic = self._topics[name] = Topic(self.participant, name, self.idl.idl_class(route.ros_type))
        return topic

    def _qos(self, route: Route, reader: bool) -> Qos:
        policies = list(route.qos.to_dds())
        if self.config.distro != "humble":  # Iron and later announce the type hash
            policies.append(Policy.Userdata(f"typehash={route.type_hash};".encode()))
        if reader:  # like rmw's ignore_local_publications: never hear our own writers
            policies.append(Policy.IgnoreLocal.Participant)
        return Qos(*policies)

    def add_reader(self, route: Route, on_sample: OnSample) -> None:
        """Receive ``route``'s ROS topic; ``on_sample(cdr, source_stamp_ns)`` runs on the backend thread."""
        reader = DataReader(self.participant, self._topic(route), qos=self._qos(route, reader=True))
        cond = ReadCondition(reader, _ANY)
        with self._lock:
            self._readers.append(_Reader(route, reader, on_sample))
            self._conditions.append(cond)
            self._waitset.attach(cond)

    def add_writer(self, route: Route) -> Callable[[bytes | memoryview], None]:
        """A function that publishes one CDR payload on ``route``'s ROS topic."""
        writer = DataWriter(self.participant, self._topic(route), qos=self._qos(route, reader=False))
        self._writers.append(_Endpoint(route, writer))
        ref = writer._ref

        def write(data: bytes | memoryview) -> None:
            ret = ddspy_write(ref, data)
            if ret < 0:
                raise DDSException(ret, f"write on {route.ros_topic}")

        return write

    # -- loop -------------------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="bridge-dds", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        next_status = 0.0
        while not self._stop.is_set():
            try:
                self._waitset.wait(duration(milliseconds=100))
                if self._stop.is_set():
                    break
                for r in self._readers:
                    self._drain(r)
                now = time.monotonic()
                if now >= next_status:
                    next_status = now + STATUS_EVERY_S
                    self.check_status()
            except Exception as exc:  # never let one bad turn end the bridge
                self.errors += 1
                log.exception("DDS receive loop: %s (continuing)", exc)
                self._stop.wait(0.05)

    def _drain(self, r: _Reader) -> None:
        while True:
            samples = ddspy_take(r.entity._ref, _ANY, TAKE_BATCH)
            if isinstance(samples, int):
                raise DDSException(samples, f"take on {r.route.ros_topic}")
            for data, info in samples:
                if not info.valid_data:
                    continue  # dispose/unregister notifications carry no message
                if not self._writer_ok(r, info.publication_handle):
                    r.route.hash_mismatch += 1
                    continue
                r.on_sample(data, info.source_timestamp)
            if len(samples) < TAKE_BATCH:
                return

    def _writer_ok(self, r: _Reader, handle: int) -> bool:
        ok = r.verdicts.get(handle)
        if ok is None:
            try:
                remote = r.entity.get_matched_publication_data(handle)
            except DDSException:
                remote = None
            if remote is None:
                return True  # not described yet: accept, and look again with its next sample
            theirs = type_hash_of(_user_data(remote.qos))
            ok = r.verdicts[handle] = theirs is None or theirs == r.route.type_hash
            if not ok:
                log.warning("%s: a ROS writer announces type hash %s, but %s is %s here; its messages are dropped",
                            r.route.ros_topic, theirs, r.route.ros_type, r.route.type_hash)
        return ok

    def check_status(self) -> None:
        """Count (and log once) QoS-incompatible peers and readers with a different type hash."""
        for r in self._readers:
            status = r.entity.get_requested_incompatible_qos_status()
            self._incompatible(r, status.total_count, status.last_policy_id, "writer")
        for w in self._writers:
            status = w.entity.get_offered_incompatible_qos_status()
            self._incompatible(w, status.total_count, status.last_policy_id, "reader")
            for handle in w.entity.get_matched_subscriptions():
                if handle in w.verdicts:
                    continue
                try:
                    remote = w.entity.get_matched_subscription_data(handle)
                except DDSException:
                    continue
                if remote is None:
                    continue
                theirs = type_hash_of(_user_data(remote.qos))
                ok = w.verdicts[handle] = theirs is None or theirs == w.route.type_hash
                if not ok:
                    w.route.hash_mismatch += 1
                    log.warning("%s: a ROS reader announces type hash %s, but %s is %s here",
                                w.route.ros_topic, theirs, w.route.ros_type, w.route.type_hash)

    def _incompatible(self, ep: _Endpoint, total: int, policy_id: int, peer: str) -> None:
        if total > ep.incompatible_seen:
            ep.route.incompatible_qos += total - ep.incompatible_seen
            ep.incompatible_seen = total
            log.warning("%s: a ROS %s with incompatible QoS cannot match (policy id %d; bridge offers %s)",
                        ep.route.ros_topic, peer, policy_id, ep.route.qos.model_dump())

    def close(self) -> None:
        self._stop.set()
        try:
            self._guard.set(True)
        except DDSException:
            pass
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=2)
        # Deleting the participant deletes every entity under it, now rather than at garbage collection.
        for entity in (self.participant, self._domain):
            _delete(entity)
        self._readers.clear()
        self._writers.clear()
        self._conditions.clear()
        self._topics.clear()
