"""boot settings: the datasource and hardware of a configuration's boot test, and of a build's

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Existing rows get today's boot test: no instance data, QEMU's virtio devices.
    for table in ("configurations", "builds"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(
                sa.Column(
                    "boot_datasource", sa.String(length=16), nullable=False, server_default="none"
                )
            )
            batch.add_column(
                sa.Column(
                    "boot_hardware", sa.String(length=16), nullable=False, server_default="kvm"
                )
            )


def downgrade() -> None:
    for table in ("builds", "configurations"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("boot_hardware")
            batch.drop_column("boot_datasource")
