#!/bin/sh
# Lower modules never include a higher module's header (DESIGN section 2). Each line: a module and
# the modules it may include from (besides itself, include/ and the standard headers).
status=0
check() {
    mod=$1; shift
    [ -d "$mod" ] || return 0
    for f in $(find "$mod" -name '*.[ch]'); do
        for inc in $(sed -n 's/^#include "\([a-z_]*\)\/.*"/\1/p' "$f" | sort -u); do
            ok=0
            for a in "$mod" ferry proto "$@"; do [ "$inc" = "$a" ] && ok=1; done
            if [ $ok = 0 ]; then echo "check-deps: $f includes from $inc/"; status=1; fi
        done
    done
}
check core
check tensor core
check transport core
check autograd core tensor
check rpc core tensor transport
check rref core tensor transport rpc
check optim core tensor autograd rpc rref
[ $status = 0 ] && echo "check-deps: module dependencies point one way"
exit $status
