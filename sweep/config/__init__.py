"""The configuration's rules: `schema` (structured configs and ranges), `targets` and
`user_code` (which `_target_`s may run, checked instantiation), `searched` (keys a sweep
gives several values)."""
