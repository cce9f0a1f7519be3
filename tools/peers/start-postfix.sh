#!/usr/bin/env bash
# start-postfix.sh DIR SMTP_PORT TRANSPORT_SPEC [DOMAIN]
#
# Start a PRIVATE Postfix instance (Debian 12 / Postfix 3.7) that listens on
# 127.0.0.1:SMTP_PORT only, keeps everything under DIR (config/, queue/,
# data/, maillog), never touches /etc/postfix and needs no systemd/syslog.
#
#   TRANSPORT_SPEC  lmtp:HOST:PORT            deliver over LMTP (inet)
#                   pipe:/path/to/cmd args..  Postfix pipe(8) argv (the text
#                                             after "argv="), run as user
#                                             mailgate with flags=DRhu, e.g.
#       'pipe:/opt/gw/venv/bin/mailgate --config /opt/gw/cfg deliver --sender ${sender} --recipient ${recipient}'
#                   none                      no transport of its own: the caller's
#                                             RECIPE_* files say where mail goes
#   DOMAIN          relay domain (default example.com)
#
# Environment:
#   RECIPIENTS          accepted recipients (default "support@DOMAIN billing@DOMAIN");
#                       user+detail@domain is accepted for each (recipient_delimiter=+)
#   OUTBOUND_TRANSPORT  default_transport for every non-relay domain (default
#                       "error:5.3.0 outbound mail disabled in private test MTA":
#                       RCPT to such addresses gets 550 at SMTP time, and bounces to
#                       outside senders are dropped as double bounces, so the queue
#                       always drains without internet/DNS). relay_transport is
#                       discard: (only bounces to unlisted senders in DOMAIN use it).
#   PIPE_USER           pipe user (default mailgate; created as system user if missing)
#   MYHOSTNAME          default pfr-test.localdomain
#   RECIPE_MAIN_CF      a file of main.cf lines ("key = value") set with postconf -e after
#                       the instance's own, so they win (e.g. the recipe of docs/operations.md:
#                       relay_recipient_maps, transport_maps, message_size_limit ...)
#   RECIPE_MASTER_CF    a file appended to master.cf (e.g. the mailgate pipe service)
#   RECIPE_TABLES       table source files copied into DIR/config and postmap'ed there
#                       (reference them in RECIPE_MAIN_CF as hash:DIR/config/NAME)
#   PIPE_CMD            in "none" mode with a pipe service: its command, checked to be
#                       executable by PIPE_USER (created if missing) before the start
#
# On success prints shell-sourceable lines on stdout (everything else -> stderr):
#   POSTFIX_DIR=...  POSTFIX_CONFIG=...  SMTP_PORT=...  MAILLOG=...
#   eval "$(./start-postfix.sh /tmp/x 6225 lmtp:127.0.0.1:6224)"
#
# Postfix must be installed (Debian package, NO default configuration):
#   echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
#   DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix
# (this replaces any other installed MTA, e.g. exim4; the default instance is
#  left unconfigured and is not started.)
set -euo pipefail
export PATH=/usr/sbin:/sbin:/usr/bin:/bin:$PATH
umask 022

die() { echo "start-postfix.sh: ERROR: $*" >&2; exit 1; }
usage() { awk 'NR>1 && /^#/ {sub(/^# ?/, ""); print; next} NR>1 {exit}' "$0" >&2; exit 2; }

[ $# -ge 3 ] && [ $# -le 4 ] || usage
DIR_ARG=$1 SMTP_PORT=$2 SPEC=$3 DOMAIN=${4:-example.com}
RECIPIENTS=${RECIPIENTS:-"support@$DOMAIN billing@$DOMAIN"}
OUTBOUND_TRANSPORT=${OUTBOUND_TRANSPORT:-"error:5.3.0 outbound mail disabled in private test MTA"}
PIPE_USER=${PIPE_USER:-mailgate}
MYHOSTNAME=${MYHOSTNAME:-pfr-test.localdomain}

# ---------------------------------------------------------------- preflight
[ "$(id -u)" = 0 ] || die "must run as root (Postfix master/chroot need it)"
if ! command -v postfix >/dev/null || ! command -v postconf >/dev/null \
   || ! command -v postmap >/dev/null || [ ! -x /usr/lib/postfix/sbin/master ]; then
    die "postfix is not installed. Install it without letting debconf write /etc/postfix/main.cf:
    echo 'postfix postfix/main_mailer_type select No configuration' | debconf-set-selections
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends postfix"
fi
[[ $SMTP_PORT =~ ^[0-9]+$ ]] && [ "$SMTP_PORT" -ge 1 ] && [ "$SMTP_PORT" -le 65535 ] \
    || die "SMTP_PORT '$SMTP_PORT' is not a port number"
[[ $DOMAIN =~ ^[A-Za-z0-9.-]+$ ]] || die "bad DOMAIN '$DOMAIN'"

DIR=$(realpath -m -- "$DIR_ARG")          # postfix -c needs an absolute path
[[ $DIR =~ ^/[A-Za-z0-9._/+-]+$ ]] \
    || die "DIR '$DIR' must be a plain path (no spaces/commas: it goes into main.cf lists)"
# AF_UNIX socket paths (DIR/queue/private/<service>) are limited to 107 bytes.
[ ${#DIR} -le 70 ] || die "DIR '$DIR' is too long (${#DIR} > 70 chars) for Postfix's unix sockets"
CONF=$DIR/config QUEUE=$DIR/queue DATA=$DIR/data MAILLOG=$DIR/maillog

case $SPEC in
  lmtp:*)
    hp=${SPEC#lmtp:}; LMTP_HOST=${hp%:*}; LMTP_PORT=${hp##*:}
    [ -n "$LMTP_HOST" ] && [ "$LMTP_HOST" != "$hp" ] && [[ $LMTP_PORT =~ ^[0-9]+$ ]] \
        || die "bad TRANSPORT_SPEC '$SPEC' (want lmtp:HOST:PORT)"
    MODE=lmtp; NEXTHOP="lmtp:inet:$LMTP_HOST:$LMTP_PORT" ;;
  pipe:*)
    ARGV=${SPEC#pipe:}; ARGV=${ARGV#"${ARGV%%[![:space:]]*}"}
    [ -n "$ARGV" ] || die "bad TRANSPORT_SPEC '$SPEC' (want pipe:/path/to/command args...)"
    [[ $ARGV != *$'\n'* ]] || die "pipe argv must be one line"
    CMD=${ARGV%%[[:space:]]*}
    [[ $CMD == /* ]] || die "pipe command '$CMD' must be an absolute path"
    MODE=pipe; NEXTHOP="mailgate:" ;;
  none) MODE=none; NEXTHOP="" ;;
  *) die "bad TRANSPORT_SPEC '$SPEC' (want lmtp:HOST:PORT, pipe:/path/to/command args... or none)" ;;
esac

port_busy() { timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$1" 2>/dev/null; }

if [ -f "$CONF/main.cf" ] && postfix -c "$CONF" status >/dev/null 2>&1; then
    die "a Postfix for $DIR is already running (pid $(sed -n '1{s/ //g;p}' "$QUEUE/pid/master.pid" 2>/dev/null)); run stop-postfix.sh $DIR first"
fi
if port_busy "$SMTP_PORT" || { command -v ss >/dev/null && ss -Hltn "sport = :$SMTP_PORT" | grep -q .; }; then
    die "port $SMTP_PORT is already in use: $(ss -Hltnp "sport = :$SMTP_PORT" 2>/dev/null | head -1)"
fi

# ---------------------------------------------------------------- pipe user
if [ "$MODE" = none ] && [ -n "${PIPE_CMD:-}" ]; then
    MODE_PIPE_CHECK=1; CMD=$PIPE_CMD
fi
if [ "$MODE" = pipe ] || [ -n "${MODE_PIPE_CHECK:-}" ]; then
    if ! getent passwd "$PIPE_USER" >/dev/null; then
        echo "start-postfix.sh: creating system user $PIPE_USER" >&2
        useradd --system --no-create-home --home-dir /nonexistent \
                --shell /usr/sbin/nologin "$PIPE_USER" \
            || die "cannot create system user $PIPE_USER"
    fi
    # The command runs as $PIPE_USER: check it (and its #! interpreter) is
    # executable by that user -- a venv built on /root/.pyenv is not.
    runuser -u "$PIPE_USER" -- test -x "$CMD" \
        || die "pipe command $CMD is not executable by user $PIPE_USER (check every parent dir's x bit)"
    if head -c2 "$CMD" 2>/dev/null | grep -q '^#!'; then
        interp=$(head -1 "$CMD" | sed 's/^#![[:space:]]*//; s/[[:space:]].*//')
        runuser -u "$PIPE_USER" -- test -x "$interp" \
            || die "interpreter $interp of $CMD is not executable by $PIPE_USER (build the venv on /usr/bin/python3, outside /root)"
    fi
fi

# ---------------------------------------------------------------- files
mkdir -p "$CONF" "$QUEUE" "$DATA"
chown root:root "$DIR" "$CONF" "$QUEUE"
chmod 755 "$DIR" "$CONF" "$QUEUE"
chown postfix:postfix "$DATA"; chmod 700 "$DATA"
touch "$MAILLOG"; chmod 644 "$MAILLOG"

# relay_domains: DOMAIN plus every recipient's domain
rdomains=$DOMAIN
for r in $RECIPIENTS; do
    [[ $r == ?*@?* ]] || die "bad recipient '$r' in RECIPIENTS"
    d=${r##*@}; [[ " $rdomains " == *" $d "* ]] || rdomains="$rdomains $d"
done

cat > "$CONF/main.cf" <<EOF
# private Postfix instance written by start-postfix.sh -- do not edit
compatibility_level = 3.6
queue_directory = $QUEUE
data_directory = $DATA
myhostname = $MYHOSTNAME
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relay_domains = $rdomains
relay_recipient_maps = hash:$CONF/relay_recipients
transport_maps = hash:$CONF/transport
recipient_delimiter = +
default_transport = $OUTBOUND_TRANSPORT
# not error: -- smtpd would reject unlisted relay recipients with the error
# text instead of "User unknown in relay recipient table". Only locally made
# mail (bounces to an unlisted sender in DOMAIN) can reach it.
relay_transport = discard:unlisted address in relay domain (private test MTA)
message_size_limit = 41943040
queue_run_delay = 10s
minimal_backoff_time = 10s
maximal_backoff_time = 30s
maillog_file = $MAILLOG
maillog_file_prefixes = /var, /dev/stdout, $DIR
alias_maps =
alias_database =
biff = no
smtpd_peername_lookup = no
smtpd_banner = \$myhostname ESMTP private-test-postfix
EOF
if [ "$MODE" = pipe ]; then echo "mailgate_destination_recipient_limit = 1" >> "$CONF/main.cf"; fi

# master.cf: Debian's stock file (default chroot), smtpd only on 127.0.0.1:PORT
MASTER_SRC=/usr/share/postfix/master.cf.dist
[ -f "$MASTER_SRC" ] || MASTER_SRC=/etc/postfix/master.cf
[ -f "$MASTER_SRC" ] || die "no stock master.cf found (/usr/share/postfix/master.cf.dist)"
awk -v port="$SMTP_PORT" '
  $1 == "smtp" && $2 == "inet" { print "127.0.0.1:" port " inet  n       -       y       -       -       smtpd"; done=1; next }
  { print }
  END { if (!done) exit 1 }' "$MASTER_SRC" > "$CONF/master.cf" \
    || die "no 'smtp inet' line in $MASTER_SRC"
if [ "$MODE" = pipe ]; then
    cat >> "$CONF/master.cf" <<EOF
mailgate  unix  -       n       n       -       10      pipe
  flags=DRhu user=$PIPE_USER null_sender= argv=$ARGV
EOF
fi

: > "$CONF/transport"; : > "$CONF/relay_recipients"
for r in $RECIPIENTS; do
    [ -n "$NEXTHOP" ] && printf '%s\t%s\n' "$r" "$NEXTHOP" >> "$CONF/transport"
    printf '%s\tOK\n' "$r" >> "$CONF/relay_recipients"
done
postmap -c "$CONF" "hash:$CONF/transport" && postmap -c "$CONF" "hash:$CONF/relay_recipients" \
    || die "postmap failed"

# ---------------------------------------------------------------- the caller's recipe
for t in ${RECIPE_TABLES:-}; do
    [ -f "$t" ] || die "RECIPE_TABLES: $t not found"
    cp -- "$t" "$CONF/$(basename -- "$t")"
    postmap -c "$CONF" "hash:$CONF/$(basename -- "$t")" || die "postmap $t failed"
done
if [ -n "${RECIPE_MAIN_CF:-}" ]; then
    [ -f "$RECIPE_MAIN_CF" ] || die "RECIPE_MAIN_CF: $RECIPE_MAIN_CF not found"
    while IFS= read -r line || [ -n "$line" ]; do
        # whole-line comments only: main.cf has no trailing comments ("x = + # y" sets "+ # y")
        [[ $line =~ ^[[:space:]]*(#.*)?$ ]] && continue
        [[ $line =~ ^[A-Za-z0-9_]+[[:space:]]*= ]] || die "RECIPE_MAIN_CF: not 'key = value': $line"
        postconf -c "$CONF" -e "$line" || die "postconf -e '$line' failed"
    done < "$RECIPE_MAIN_CF"
fi
if [ -n "${RECIPE_MASTER_CF:-}" ]; then
    [ -f "$RECIPE_MASTER_CF" ] || die "RECIPE_MASTER_CF: $RECIPE_MASTER_CF not found"
    cat -- "$RECIPE_MASTER_CF" >> "$CONF/master.cf"
fi

# ---------------------------------------------------------------- start
out=$(postfix -c "$CONF" check 2>&1) || die "postfix check failed:
$out"
[ -n "$out" ] && echo "$out" >&2
if ! postfix -c "$CONF" start >&2; then
    echo "---- tail of $MAILLOG" >&2; tail -20 "$MAILLOG" >&2
    die "postfix -c $CONF start failed"
fi
for _ in $(seq 1 150); do
    port_busy "$SMTP_PORT" && break
    sleep 0.2
done
if ! port_busy "$SMTP_PORT"; then
    echo "---- tail of $MAILLOG" >&2; tail -20 "$MAILLOG" >&2
    postfix -c "$CONF" stop >&2 || true
    die "Postfix started but 127.0.0.1:$SMTP_PORT never accepted connections"
fi

printf 'POSTFIX_DIR=%q\nPOSTFIX_CONFIG=%q\nSMTP_PORT=%q\nMAILLOG=%q\n' \
    "$DIR" "$CONF" "$SMTP_PORT" "$MAILLOG"
