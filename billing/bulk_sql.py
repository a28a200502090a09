"""Writing many rows' new values in one statement, for the set-based steps of the sweep and the staff changes."""

from __future__ import annotations

import json
from collections.abc import Sequence

from django.db import connection, models


def rows_update(model: type[models.Model], objs: Sequence[models.Model], fields: list[str]) -> None:
    """What `model.objects.bulk_update(objs, fields)` writes, as one `UPDATE … FROM unnest(…)` on PostgreSQL:
    Django's bulk_update builds a CASE per row and field, which costs more than the rest of a chunk together."""
    if not objs:
        return
    if connection.vendor != "postgresql":
        model.objects.bulk_update(objs, fields)
        return
    meta = model._meta
    columns, arrays, values = [], [], []
    for name in fields:
        field = meta.get_field(name)
        column = connection.ops.quote_name(field.column)
        if isinstance(field, models.JSONField):  # sent as text, cast per value (no jsonb[] adaptation needed)
            arrays.append("%s::text[]")
            values.append([None if getattr(obj, field.attname) is None
                           else json.dumps(field.get_prep_value(getattr(obj, field.attname)), cls=field.encoder)
                           for obj in objs])
            columns.append(f"{column} = v.{column}::jsonb")
        else:
            arrays.append(f"%s::{field.db_type(connection) if not field.is_relation else field.rel_db_type(connection)}[]")
            values.append([field.get_db_prep_save(getattr(obj, field.attname), connection) for obj in objs])
            columns.append(f"{column} = v.{column}")
    pk = meta.pk
    names = ", ".join([connection.ops.quote_name(pk.column)]
                      + [connection.ops.quote_name(meta.get_field(name).column) for name in fields])
    table = connection.ops.quote_name(meta.db_table)
    pk_column = connection.ops.quote_name(pk.column)
    sql = (f"UPDATE {table} AS t SET {', '.join(columns)} "  # noqa: S608 - our own table and column names
           f"FROM unnest(%s::{pk.rel_db_type(connection)}[], {', '.join(arrays)}) AS v({names}) "
           f"WHERE t.{pk_column} = v.{pk_column}")
    with connection.cursor() as cursor:
        cursor.execute(sql, [[obj.pk for obj in objs], *values])
