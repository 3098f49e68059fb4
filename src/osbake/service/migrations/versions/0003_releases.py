"""releases: the release queue's jobs, push targets per configuration, publications

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "release_jobs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("build_id", sa.Integer(), nullable=True),
        sa.Column("configuration_id", sa.Integer(), nullable=True),
        sa.Column("target", sa.String(length=1024), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("max_attempts", sa.Integer(), nullable=False),
        sa.Column("not_before", sa.Float(), nullable=False),
        sa.Column("error", sa.Text(), nullable=False),
        sa.Column("result", sa.JSON(), nullable=True),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("started", sa.Float(), nullable=True),
        sa.Column("finished", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["build_id"], ["builds.id"]),
        sa.ForeignKeyConstraint(["configuration_id"], ["configurations.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_release_jobs_state", "release_jobs", ["state"])
    op.create_index("ix_release_jobs_build_id", "release_jobs", ["build_id"])
    op.create_index("ix_release_jobs_configuration_id", "release_jobs", ["configuration_id"])
    op.create_table(
        "push_targets",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("configuration_id", sa.Integer(), nullable=False),
        sa.Column("spec", sa.String(length=1024), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("created_by", sa.String(length=160), nullable=False),
        sa.ForeignKeyConstraint(["configuration_id"], ["configurations.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_push_target", "push_targets", ["configuration_id", "spec"], unique=True)
    op.create_table(
        "publications",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("build_id", sa.Integer(), nullable=False),
        sa.Column("configuration_id", sa.Integer(), nullable=False),
        sa.Column("channel", sa.String(length=32), nullable=False),
        sa.Column("label", sa.String(length=32), nullable=False),
        sa.Column("content_id", sa.String(length=256), nullable=False),
        sa.Column("product", sa.String(length=512), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("paths", sa.JSON(), nullable=False),
        sa.Column("published", sa.Float(), nullable=False),
        sa.Column("removed", sa.Float(), nullable=True),
        sa.ForeignKeyConstraint(["build_id"], ["builds.id"]),
        sa.ForeignKeyConstraint(["configuration_id"], ["configurations.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_publications_build_id", "publications", ["build_id"])
    op.create_index("ix_publications_configuration_id", "publications", ["configuration_id"])


def downgrade() -> None:
    op.drop_index("ix_publications_configuration_id", table_name="publications")
    op.drop_index("ix_publications_build_id", table_name="publications")
    op.drop_table("publications")
    op.drop_index("ix_push_target", table_name="push_targets")
    op.drop_table("push_targets")
    op.drop_index("ix_release_jobs_configuration_id", table_name="release_jobs")
    op.drop_index("ix_release_jobs_build_id", table_name="release_jobs")
    op.drop_index("ix_release_jobs_state", table_name="release_jobs")
    op.drop_table("release_jobs")
