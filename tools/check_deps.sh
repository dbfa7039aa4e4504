#!/bin/sh
# Dependencies point one way (DESIGN section 2): no module includes a header of a module above
# it. A module is a directory (a sub-folder such as autograd/dist is a module of its own); an
# internal header belongs to the directory it sits in, a public header include/ferry/X.h to the
# module that implements it. Public headers are checked too, as part of their module. Run from
# the repository root; prints each violation and exits 1 if there is any.

# The modules, lowest first, each with the modules it may include from besides itself.
# proto/ (the generated wire schema) is open to every module, as before.
allowed() {
    case $1 in
    core) echo "" ;;
    tensor) echo "core" ;;
    transport) echo "core" ;;
    autograd) echo "core tensor" ;;
    rpc) echo "core tensor transport" ;;
    rref) echo "core tensor transport rpc" ;;
    autograd/dist) echo "core tensor transport rpc rref autograd" ;;
    rref/object) echo "core tensor transport rpc rref" ;;
    optim) echo "core tensor autograd rpc rref autograd/dist rref/object" ;;
    *) return 1 ;;
    esac
}
TOP_DIRS="core tensor transport autograd rpc rref optim"

# The headers of a module that others may include, where the rest are private to it. rpc's
# agent is private: modules above it plug in through rpc/module.h (and the wire and registry
# types it builds on). An empty answer means every header of the module is open.
interface() {
    case $1 in
    rpc) echo "module.h wire.h registry.h" ;;
    rref) echo "target.h" ;;
    *) echo "" ;;
    esac
}

# The module that implements each public header (where its functions are defined). ferry.h is
# the umbrella for users: no module may include it.
header_module() {
    case $1 in
    error.h | value.h | future.h) echo core ;;
    tensor.h | device.h | ops.h | safetensors.h) echo tensor ;;
    autograd.h | nn.h) echo autograd ;;
    dist_autograd.h) echo autograd/dist ;;
    rpc.h) echo rpc ;;
    rref.h) echo rref ;;
    object.h) echo rref/object ;;
    optim.h) echo optim ;;
    launch.h) echo transport ;;
    ferry.h) echo "(umbrella)" ;;
    *) return 1 ;;
    esac
}

# Prints one line per include of file $1 (in module $2) that points upward or nowhere known.
check_file() {
    f=$1 mod=$2
    ok="$mod proto $(allowed "$mod")"
    sed -n 's/^[[:space:]]*#[[:space:]]*include[[:space:]]*"\([^"]*\)".*/\1/p' "$f" | sort -u |
        while read -r inc; do
            case $inc in
            ferry/*)
                if ! to=$(header_module "${inc#ferry/}"); then
                    echo "$f includes $inc, which no module implements (map it in $0)"
                    continue
                fi ;;
            */*) to=${inc%/*} ;;
            *) continue ;; # beside the file: its own module
            esac
            found=0
            for a in $ok; do [ "$to" = "$a" ] && found=1; done
            if [ $found = 0 ]; then
                echo "$f includes $inc from $to, above $mod (allowed: ${ok% })"
                continue
            fi
            open=$(interface "$to")
            if [ "$to" != "$mod" ] && [ -n "$open" ] && [ "${inc%%/*}" != ferry ]; then
                public=0
                for h in $open; do [ "${inc#*/}" = "$h" ] && public=1; done
                [ $public = 1 ] || echo "$f includes $inc, private to $to (others use: $open)"
            fi
        done
}

report=""
add() { [ -n "$1" ] && report="$report$1
"; }

for h in include/ferry/*.h; do
    [ -e "$h" ] || continue
    if mod=$(header_module "${h##*/}"); then
        [ "$mod" = "(umbrella)" ] || add "$(check_file "$h" "$mod")"
    else
        add "$h has no module: say which module implements it in $0"
    fi
done
for top in $TOP_DIRS; do
    [ -d "$top" ] || continue
    for f in $(find "$top" -name '*.[ch]' | sort); do
        mod=${f%/*}
        if allowed "$mod" >/dev/null; then
            add "$(check_file "$f" "$mod")"
        else
            add "$f is in $mod/, which is no module yet: give it its allowed modules in $0"
        fi
    done
done

if [ -n "$report" ]; then
    printf '%s' "$report" | sed 's/^/check-deps: /'
    exit 1
fi
echo "check-deps: module dependencies point one way"
