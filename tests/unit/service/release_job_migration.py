"""Migration 0005 on a real database (SQLite in the unit tier, PostgreSQL in integration):
publish jobs made before it keep their build, new asks link every build a waiting job
serves, deleting a job takes its links, and it goes down and up again."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import delete, inspect, select
from sqlalchemy.orm import Session

from osbake.service import db, releases, views
from osbake.service.models import (
    Base,
    Build,
    Configuration,
    ConfigVersion,
    JobKind,
    JobState,
    ReleaseJob,
    ReleaseJobBuild,
)


def _links(session: Session) -> list[tuple[int, int]]:
    rows = session.execute(
        select(ReleaseJobBuild.job_id, ReleaseJobBuild.build_id).order_by(ReleaseJobBuild.id)
    ).all()
    return [(job_id, build_id) for job_id, build_id in rows]


def check_release_job_builds_migration(url: str) -> None:
    engine = db.make_engine(url)
    config = Config()
    config.set_main_option("script_location", str(db.MIGRATIONS))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "0004")
        with Session(engine) as session:
            configuration = Configuration(name="old")
            version = ConfigVersion(
                configuration=configuration, number=1, recipe_file="recipe.yaml", digest="0" * 64
            )
            first = Build(configuration=configuration, version=version, arch="amd64")
            second = Build(configuration=configuration, version=version, arch="amd64")
            session.add_all([configuration, version, first, second])
            session.flush()
            done = JobState.SUCCEEDED
            published = ReleaseJob(kind=JobKind.PUBLISH, build_id=first.id, state=done)
            pushed = ReleaseJob(
                kind=JobKind.PUSH,
                build_id=first.id,
                configuration_id=configuration.id,
                target="dir:/srv/mirror",
                state=done,
            )
            asked = ReleaseJob(kind=JobKind.PUBLISH, state=done)  # an admin's "publish now"
            session.add_all([published, pushed, asked])
            session.flush()
            # read before the commit: a reload would look for the links' table
            ids = (first.id, second.id, published.id, pushed.id)
            session.commit()
        first_id, second_id, published_id, pushed_id = ids

        db.migrate(engine)
        with Session(engine) as session:
            # the old publish job keeps the build that asked for it
            assert _links(session) == [(published_id, first_id)]
            job = releases.request_publish(session, "build 2 blessed", second_id)
            assert releases.request_publish(session, "build 1 unblessed", first_id).id == job.id
            assert releases.request_publish(session, "build 2 again", second_id).id == job.id
            assert job.build_ids == [first_id, second_id]
            assert _links(session)[1:] == [(job.id, second_id), (job.id, first_id)]
            jobs = {
                b: [j["id"] for j in views.build_release_json(session, b)["jobs"]]
                for b in (first_id, second_id)
            }
            assert jobs == {first_id: [published_id, pushed_id, job.id], second_id: [job.id]}
            # the database drops a deleted job's links itself: they block no purge
            session.execute(delete(ReleaseJob).where(ReleaseJob.id == job.id))
            session.commit()
            assert _links(session) == [(published_id, first_id)]

        with engine.connect() as connection:
            diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
            assert [d for d in diff if "release_job" in repr(d)] == []
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.downgrade(config, "0004")
            assert "release_job_builds" not in inspect(connection).get_table_names()
        db.migrate(engine)
        with Session(engine) as session:
            assert _links(session) == [(published_id, first_id)]
    finally:
        engine.dispose()
