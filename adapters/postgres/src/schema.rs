//! The tables as diesel sees them; kept in step with `migrations/` by hand (and by the
//! repository tests, which run every query against the migrated schema).

diesel::table! {
    releases (id) {
        id -> Uuid,
        service -> Text,
        version -> Text,
        image -> Text,
        template -> Text,
        required_variables -> Array<Text>,
        attributes -> Jsonb,
        comment -> Nullable<Text>,
        created_at -> Timestamptz,
        created_by -> Text,
        deleted_at -> Nullable<Timestamptz>,
        deleted_by -> Nullable<Text>,
    }
}
