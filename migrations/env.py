from __future__ import annotations

from typing import Any

from alembic import context
from alembic.migration import MigrationInfo
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect, text

from kernel.db import make_engine
from ledger.models import Base

config = context.config
target_metadata = Base.metadata


def record_revision(ctx: MigrationContext, step: MigrationInfo, heads: Any, run_args: Any) -> None:
    """Keep `schema_revisions` (migration 0015_ops) in step: a revision applied is added, one
    undone removed. Before that table exists (or once it is dropped) there is nothing to keep."""
    connection = ctx.connection
    if connection is None or not inspect(connection).has_table("schema_revisions"):
        return
    for name in step.up_revision_ids:
        connection.execute(text("DELETE FROM schema_revisions WHERE revision = :name"), {"name": name})
        if step.is_upgrade:
            connection.execute(text("INSERT INTO schema_revisions (revision) VALUES (:name)"), {"name": name})


def run_migrations_offline() -> None:
    context.configure(
        url=config.get_main_option("sqlalchemy.url"),
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                          on_version_apply=record_revision)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(config.get_main_option("sqlalchemy.url"))
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True,
                          on_version_apply=record_revision)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
