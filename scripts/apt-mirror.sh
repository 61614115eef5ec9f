#!/usr/bin/env bash
# Prints the Debian archive URI this machine's own apt sources use (the first `deb` source that
# serves the machine's release, e.g. bookworm), so scripts fetch other suites from the same
# mirror and no archive host name stands in the repository. Reads one-line sources.list files
# and deb822 .sources files. Exits 1 with a message when none is found.
set -euo pipefail
codename="$(. /etc/os-release && echo "${VERSION_CODENAME:-}")"
if [ -z "$codename" ]; then
    echo "apt-mirror: /etc/os-release names no VERSION_CODENAME" >&2
    exit 1
fi
files=()
[ -f /etc/apt/sources.list ] && files+=(/etc/apt/sources.list)
for f in /etc/apt/sources.list.d/*.list /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] && files+=("$f")
done
for f in "${files[@]}"; do
    case "$f" in
    *.sources)
        # deb822: stanzas separated by blank lines; want Types: deb, Suites containing the
        # codename itself (not only -security/-updates).
        uri=$(awk -v want="$codename" '
            function flush() {
                if (types ~ /(^| )deb( |$)/ && (" " suites " ") ~ (" " want " ") && uris != "" && enabled != "no") {
                    split(uris, u, " "); print u[1]; found = 1; exit
                }
                types = ""; suites = ""; uris = ""; enabled = ""
            }
            /^[[:space:]]*$/ { flush(); next }
            /^[[:space:]]*#/ { next }
            tolower($1) == "types:"   { $1 = ""; types = $0 }
            tolower($1) == "suites:"  { $1 = ""; suites = $0 }
            tolower($1) == "uris:"    { $1 = ""; uris = $0; sub(/^ +/, "", uris) }
            tolower($1) == "enabled:" { enabled = tolower($2) }
            END { if (!found) flush() }
        ' "$f")
        ;;
    *)
        # one-line: deb [options] URI SUITE COMPONENTS...
        uri=$(sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
            awk -v want="$codename" '$1 == "deb" && $3 == want { print $2; exit }')
        ;;
    esac
    if [ -n "$uri" ]; then
        echo "${uri%/}"
        exit 0
    fi
done
echo "apt-mirror: no deb source for $codename in the host's apt sources" >&2
exit 1
