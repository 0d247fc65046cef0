"""swarm_wait's reading of Swarm states (the real engine is exercised by
tests/integration/test_swarm.py; here the states that are hard to provoke on purpose)."""

from ansible_collections.opsdeck.stack.plugins.modules import swarm_wait


class FakeSwarm:
    """What `docker service ls` / `inspect` / `stack ps` print, as parsed JSON. Without
    explicit tasks, each row's "running/desired" becomes that many running and pending tasks."""

    def __init__(self, rows, specs, tasks=None):
        self.rows, self.specs, self.task_rows = rows, specs, tasks

    def services(self, stack):
        return self.rows

    def tasks(self, stack):
        if self.task_rows is not None:
            return self.task_rows
        out = []
        for row in self.rows:
            running, desired = (int(x.split()[0]) for x in row["Replicas"].split("/"))
            for slot in range(1, desired + 1):
                out.append({"Name": "%s.%d" % (row["Name"], slot), "DesiredState": "Running",
                            "CurrentState": "Running 5 seconds ago" if slot <= running
                            else "Pending 2 seconds ago"})
        return out

    def inspect(self, ids):
        # Like docker: short IDs in, specs with long IDs out.
        return [dict(s, ID=s["ID"] + "0123456789abcdef") for s in self.specs if s["ID"] in ids]


def spec(service_id, name, state=None, started=None, message="", replicas=None):
    out = {"ID": service_id, "Spec": {"Name": name, "TaskTemplate": {
        "ContainerSpec": {"Image": "opsdeck/refapp:0.1.0@sha256:abc"}},
        "Mode": {"Global": {}} if replicas is None else {"Replicated": {"Replicas": replicas}}}}
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
                     [spec("a", "shop_api", "completed", "2026-11-23T19:34:20Z", replicas=2),
                      spec("p", "shop_proxy", replicas=1)])
    states, failed, busy = swarm_wait.look(fake, "shop", None, None)
    assert failed == [] and busy == []
    assert states["api"] == {"desired": 2, "running": 2, "update_state": "completed",
                             "image": "opsdeck/refapp:0.1.0"}
    assert states["proxy"]["desired"] == 1


def test_a_rollback_since_the_deploy_fails_and_an_older_one_is_ignored():
    fake = FakeSwarm([{"ID": "a", "Name": "shop_api", "Replicas": "2/2"}],
                     [spec("a", "shop_api", "rollback_completed", "1970-01-01T00:01:40Z",
                           "update rolled back due to failure or early termination", replicas=2)])
    _states, failed, _busy = swarm_wait.look(fake, "shop", since=50.0, only=None)
    assert failed == [("api", "a0123456789abcdef", "rollback_completed",
                       "update rolled back due to failure or early termination")]
    states, failed, busy = swarm_wait.look(fake, "shop", since=200.0, only=None)
    assert failed == [] and busy == [] and states["api"]["update_state"] == ""


def test_updating_or_short_of_replicas_is_busy_and_missing_services_are_reported():
    fake = FakeSwarm([{"ID": "a", "Name": "shop_api", "Replicas": "1/2"},
                      {"ID": "b", "Name": "shop_web", "Replicas": "1/1"}],
                     [spec("a", "shop_api", replicas=2),
                      spec("b", "shop_web", "updating", "1970-01-01T00:01:40Z", replicas=1)])
    states, _failed, busy = swarm_wait.look(fake, "shop", since=0.0, only=["api", "web", "worker"])
    assert busy == ["api", "web", "worker"]
    assert states["worker"]["update_state"] == "missing"
    assert swarm_wait.describe(states, ["api", "web"]) == "api 1/2 running; web 1/1 running, updating"


def test_tasks_of_a_node_that_is_down_do_not_count():
    """A manager was killed with two api tasks on it: Swarm replaced them elsewhere, but
    `service ls` still counts the lost ones as running (7/5). The stack has converged."""
    tasks = [{"Name": "shop_api.%d" % slot, "DesiredState": "Running",
              "CurrentState": "Running 3 seconds ago"} for slot in range(1, 6)]
    tasks.append({"Name": "shop_node-exporter.n1", "DesiredState": "Running",
                  "CurrentState": "Running 1 minute ago"})
    fake = FakeSwarm([{"ID": "a", "Name": "shop_api", "Replicas": "7/5"},
                      {"ID": "n", "Name": "shop_node-exporter", "Replicas": "2/1"}],
                     [spec("a", "shop_api", replicas=5), spec("n", "shop_node-exporter")], tasks)
    states, failed, busy = swarm_wait.look(fake, "shop", None, None)
    assert failed == [] and busy == []
    assert states["api"]["running"] == 5 and states["node-exporter"] == dict(
        states["node-exporter"], desired=1, running=1)
    # One replacement still starting: busy.
    tasks[0] = dict(tasks[0], CurrentState="Starting 1 second ago")
    _states, _failed, busy = swarm_wait.look(fake, "shop", None, None)
    assert busy == ["api"]
