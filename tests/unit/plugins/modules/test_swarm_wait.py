"""swarm_wait's reading of Swarm states (the real engine is exercised by
tests/integration/test_swarm.py; here the states that are hard to provoke on purpose)."""

from ansible_collections.opsdeck.stack.plugins.modules import swarm_wait


class FakeSwarm:
    """What `docker service ls` / `inspect` print, as parsed JSON."""

    def __init__(self, rows, specs):
        self.rows, self.specs = rows, specs

    def services(self, stack):
        return self.rows

    def inspect(self, ids):
        # Like docker: short IDs in, specs with long IDs out.
        return [dict(s, ID=s["ID"] + "0123456789abcdef") for s in self.specs if s["ID"] in ids]


def spec(service_id, name, state=None, started=None, message=""):
    out = {"ID": service_id, "Spec": {"Name": name, "TaskTemplate": {
        "ContainerSpec": {"Image": "opsdeck/refapp:0.1.0@sha256:abc"}}}}
    if state:
        out["UpdateStatus"] = {"State": state, "StartedAt": started, "Message": message}
    return out


def test_parse_time_reads_docker_timestamps():
    assert swarm_wait.parse_time("1970-01-01T00:01:00.5Z") == 60.5
    assert swarm_wait.parse_time("2026-11-23T19:34:20.070123456Z") > 1.7e9
    assert swarm_wait.parse_time("") is None


def test_converged_stack_is_not_busy():
    fake = FakeSwarm([{"ID": "a", "Name": "shop_api", "Replicas": "2/2"},
                     {"ID": "p", "Name": "shop_proxy", "Replicas": "1/1 (max 1 per node)"}],
                     [spec("a", "shop_api", "completed", "2026-11-23T19:34:20Z"), spec("p", "shop_proxy")])
    states, failed, busy = swarm_wait.look(fake, "shop", None, None)
    assert failed == [] and busy == []
    assert states["api"] == {"desired": 2, "running": 2, "update_state": "completed",
                             "image": "opsdeck/refapp:0.1.0"}
    assert states["proxy"]["desired"] == 1


def test_a_rollback_since_the_deploy_fails_and_an_older_one_is_ignored():
    fake = FakeSwarm([{"ID": "a", "Name": "shop_api", "Replicas": "2/2"}],
                     [spec("a", "shop_api", "rollback_completed", "1970-01-01T00:01:40Z",
                           "update rolled back due to failure or early termination")])
    _states, failed, _busy = swarm_wait.look(fake, "shop", since=50.0, only=None)
    assert failed == [("api", "a0123456789abcdef", "rollback_completed",
                       "update rolled back due to failure or early termination")]
    states, failed, busy = swarm_wait.look(fake, "shop", since=200.0, only=None)
    assert failed == [] and busy == [] and states["api"]["update_state"] == ""


def test_updating_or_short_of_replicas_is_busy_and_missing_services_are_reported():
    fake = FakeSwarm([{"ID": "a", "Name": "shop_api", "Replicas": "1/2"},
                      {"ID": "b", "Name": "shop_web", "Replicas": "1/1"}],
                     [spec("a", "shop_api"), spec("b", "shop_web", "updating", "1970-01-01T00:01:40Z")])
    states, _failed, busy = swarm_wait.look(fake, "shop", since=0.0, only=["api", "web", "worker"])
    assert busy == ["api", "web", "worker"]
    assert states["worker"]["update_state"] == "missing"
    assert swarm_wait.describe(states, ["api", "web"]) == "api 1/2 running; web 1/1 running, updating"
