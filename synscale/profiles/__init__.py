"""Site profiles that ship with synscale (package data: an installed wheel
has them too). `[backend] profile = "<name>"` reads <name>.toml here; a
site's own profile is a path to a .toml file (backends/profile.py). A
package of its own so that editing one is not a code change of any stage
kind (backends/code.py: data files concern the kinds that import their
package; nothing imports this one)."""
