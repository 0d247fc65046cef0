# -*- coding: utf-8 -*-
# Copyright (c) opsdeck maintainers
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Fixtures for the reference app tests: the app itself, a real redis-server, a real PostgreSQL."""

from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import refapp_support  # noqa: E402  pylint: disable=wrong-import-position


@pytest.fixture
def refapp_factory(tmp_path):
    """Start reference apps with extra env; every app started is stopped afterwards."""
    apps = []

    def start(env=None, **kwargs):
        app = refapp_support.RefApp(str(tmp_path), env=env, **kwargs)
        apps.append(app)
        return app

    yield start
    for app in apps:
        app.stop()


@pytest.fixture
def refapp(refapp_factory):
    """A reference app with tenants acme and globex and an admin token, no dependencies."""
    return refapp_factory({"TENANTS": "acme,globex"})


@pytest.fixture(scope="session")
def refapp_redis_server(tmp_path_factory):
    server = refapp_support.RedisServer(str(tmp_path_factory.mktemp("redis")))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def refapp_postgres_server():
    server = refapp_support.PostgresServer()
    yield server
    server.stop()
