# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The reference app against a real redis-server and a real PostgreSQL 15."""

from __future__ import annotations

import os


def _redis_env(server, password_file=None):
    return {"REDIS_HOST": "127.0.0.1", "REDIS_PORT": str(server.port),
            "REDIS_PASSWORD_FILE": password_file or server.password_file, "TENANTS": "acme"}


def _pg_env(server, user=None, password_file=None, db=None):
    return {"DATABASE_HOST": "127.0.0.1", "DATABASE_PORT": str(server.port),
            "DATABASE_NAME": db or server.APP_DB, "DATABASE_USER": user or server.APP_USER,
            "DATABASE_PASSWORD_FILE": password_file or server.app_password_file}


# ------------------------------------------------------------------------------ Redis


def test_redis_health_and_counter(refapp_factory, refapp_redis_server):
    app = refapp_factory(_redis_env(refapp_redis_server))
    health = app.get("/health")
    assert health.status == 200, health.body
    assert health.json()["checks"]["redis"]["status"] == "up"
    assert app.get("/health/ready").status == 200
    before = refapp_redis_server.command("GET", "refapp:hits:acme")
    first = app.get("/api/cache?tenant=acme").json()["hits"]
    second = app.get("/api/cache?tenant=acme").json()["hits"]
    assert second == first + 1
    assert int(refapp_redis_server.command("GET", "refapp:hits:acme")) == second
    assert before is None or int(before) == first - 1


def test_redis_wrong_password_is_reported(refapp_factory, refapp_redis_server, tmp_path):
    bad = tmp_path / "bad-pw"
    bad.write_text("not-the-password\n")
    app = refapp_factory(_redis_env(refapp_redis_server, password_file=str(bad)))
    health = app.get("/health")
    assert health.status == 503
    assert "WRONGPASS" in health.json()["checks"]["redis"]["error"]
    assert app.get("/health/ready").status == 503


def test_tenants_from_redis_set_and_tenant_config(refapp_factory, refapp_redis_server):
    app = refapp_factory(_redis_env(refapp_redis_server))
    assert app.get("/api/tenants/initech/status", auth=True).status == 404
    refapp_redis_server.command("SADD", "app:tenants", "initech")
    status = app.get("/api/tenants/initech/status", auth=True)
    assert status.status == 200 and status.json()["tenant_id"] == "initech"
    assert "initech" in app.get("/admin/status", auth=True).json()["tenants"]

    # tenant config under <REDIS_KEY_PREFIX>config:<tenant>, the prefix "app:" by default
    assert app.get("/api/config?tenant=hooli").status == 404
    assert app.post("/api/config?tenant=hooli", body={"plan": "pro"}).status == 401
    put = app.post("/api/config?tenant=hooli", body={"plan": "pro", "region": "eu-west"}, auth=True)
    assert put.status == 200 and put.json()["key"] == "app:config:hooli"
    assert refapp_redis_server.command("GET", "app:config:hooli") == '{"plan": "pro", "region": "eu-west"}'
    assert app.get("/api/config?tenant=hooli").json()["config"] == {"plan": "pro", "region": "eu-west"}
    assert app.get("/api/tenants/hooli/status", auth=True).status == 200, "writing a config registers the tenant"


def test_redis_key_prefix_is_a_setting(refapp_factory, refapp_redis_server):
    app = refapp_factory(dict(_redis_env(refapp_redis_server), REDIS_KEY_PREFIX="shop:"))
    refapp_redis_server.command("SADD", "shop:tenants", "umbrella")
    assert app.get("/api/tenants/umbrella/status", auth=True).status == 200
    put = app.post("/api/config?tenant=umbrella", body={"plan": "free"}, auth=True)
    assert put.status == 200 and put.json()["key"] == "shop:config:umbrella"
    assert refapp_redis_server.command("GET", "shop:config:umbrella") == '{"plan": "free"}'
    assert refapp_redis_server.command("SISMEMBER", "shop:tenants", "umbrella") == 1
    # the default prefix's keys are not this app's
    refapp_redis_server.command("SADD", "app:tenants", "stranger")
    assert app.get("/api/tenants/stranger/status", auth=True).status == 404


def test_redis_reconnects_after_connection_is_killed(refapp_factory, refapp_redis_server):
    app = refapp_factory(_redis_env(refapp_redis_server))
    assert app.get("/api/cache?tenant=acme").status == 200
    killed = refapp_redis_server.command("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
    assert killed >= 1
    assert app.get("/api/cache?tenant=acme").status == 200
    assert app.get("/health").status == 200


# -------------------------------------------------------------------------- PostgreSQL


def test_postgres_scram_health_and_counter(refapp_factory, refapp_postgres_server):
    pg = refapp_postgres_server
    assert pg.psql("SELECT rolpassword LIKE 'SCRAM-SHA-256$%' FROM pg_authid WHERE rolname = 'app'").strip() == "t"
    app = refapp_factory(_pg_env(pg))
    health = app.get("/health")
    assert health.status == 200, health.body
    assert health.json()["checks"]["database"]["status"] == "up"
    assert app.get("/health/ready").status == 200
    first = app.get("/api/db").json()
    assert first["select"] == 1
    second = app.get("/api/db").json()
    assert second["counter"] == first["counter"] + 1
    stored = pg.psql("SELECT value FROM refapp_counter WHERE name = 'hits'", db=pg.APP_DB).strip()
    assert int(stored) == second["counter"]


def test_postgres_md5_auth(refapp_factory, refapp_postgres_server):
    pg = refapp_postgres_server
    assert pg.psql("SELECT rolpassword LIKE 'md5%' FROM pg_authid WHERE rolname = 'legacy'").strip() == "t"
    app = refapp_factory(_pg_env(pg, user=pg.MD5_USER, password_file=pg.md5_password_file, db="postgres"))
    health = app.get("/health")
    assert health.status == 200, health.body
    assert health.json()["checks"]["database"]["status"] == "up"


def test_postgres_wrong_password_is_reported(refapp_factory, refapp_postgres_server, tmp_path):
    bad = tmp_path / "bad-pw"
    bad.write_text("nope\n")
    app = refapp_factory(_pg_env(refapp_postgres_server, password_file=str(bad)))
    health = app.get("/health")
    assert health.status == 503
    assert "password authentication failed" in health.json()["checks"]["database"]["error"]
    assert app.get("/api/db").status == 503


def test_postgres_reconnects_after_backend_is_terminated(refapp_factory, refapp_postgres_server):
    pg = refapp_postgres_server
    app = refapp_factory(_pg_env(pg))
    assert app.get("/api/db").status == 200
    killed = pg.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                     "WHERE application_name = 'refapp'").strip()
    assert int(killed) >= 1
    assert app.get("/api/db").status == 200
    assert app.get("/health").status == 200


def test_dependencies_together(refapp_factory, refapp_postgres_server, refapp_redis_server):
    env = _pg_env(refapp_postgres_server)
    env.update(_redis_env(refapp_redis_server))
    app = refapp_factory(env)
    checks = app.get("/health").json()["checks"]
    assert checks["database"]["status"] == "up" and checks["redis"]["status"] == "up"
    assert os.path.exists(env["DATABASE_PASSWORD_FILE"])
