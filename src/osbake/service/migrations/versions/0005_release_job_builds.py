"""release job builds: every build a release job serves (one waiting publish job serves many)

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "release_job_builds",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.Integer(), nullable=False),
        sa.Column("build_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["job_id"], ["release_jobs.id"], ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["build_id"], ["builds.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(
        "ix_release_job_build", "release_job_builds", ["job_id", "build_id"], unique=True
    )
    op.create_index("ix_release_job_builds_build_id", "release_job_builds", ["build_id"])
    # Publish jobs made before this knew only the build that asked first.
    op.execute(
        "INSERT INTO release_job_builds (job_id, build_id) "
        "SELECT id, build_id FROM release_jobs "
        "WHERE kind = 'publish' AND build_id IS NOT NULL"
    )


def downgrade() -> None:
    op.drop_index("ix_release_job_builds_build_id", table_name="release_job_builds")
    op.drop_index("ix_release_job_build", table_name="release_job_builds")
    op.drop_table("release_job_builds")
