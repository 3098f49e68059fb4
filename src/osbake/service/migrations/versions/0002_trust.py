"""trust: token expiry and revocation, server-side sessions, claims, uploads, re-queueing

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("tokens") as batch:
        batch.add_column(sa.Column("expires", sa.Float(), nullable=True))
        batch.add_column(sa.Column("revoked", sa.Float(), nullable=True))
        batch.add_column(
            sa.Column("created_by", sa.String(length=160), nullable=False, server_default="")
        )
    with op.batch_alter_table("builds") as batch:
        batch.add_column(sa.Column("claimed_by", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("enqueued", sa.Float(), nullable=True))
        batch.add_column(sa.Column("uploads", sa.JSON(), nullable=True))
    op.create_table(
        "web_sessions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("created", sa.Float(), nullable=False),
        sa.Column("expires", sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("digest"),
    )
    op.create_index("ix_web_sessions_user_id", "web_sessions", ["user_id"])


def downgrade() -> None:
    op.drop_index("ix_web_sessions_user_id", table_name="web_sessions")
    op.drop_table("web_sessions")
    with op.batch_alter_table("builds") as batch:
        batch.drop_column("uploads")
        batch.drop_column("enqueued")
        batch.drop_column("claimed_by")
    with op.batch_alter_table("tokens") as batch:
        batch.drop_column("created_by")
        batch.drop_column("revoked")
        batch.drop_column("expires")
