# Kamailio 5.6 (Debian bookworm's package) with the fixture registrar/proxy config and its
# users (5001/pass5001, 5002/pass5002, 1003/pass1003, 1004/pass1004, 6001-6020; realm
# 127.0.0.1), started the way tests/it/common/kamailio.rs and scripts/demo start it.
# Build context: the repository root (see docker-compose.yml).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends kamailio \
 && rm -rf /var/lib/apt/lists/* \
 && mkdir -p /var/lib/kamailio-gw/db \
 && chown -R kamailio:kamailio /var/lib/kamailio-gw
COPY fixtures/kamailio/kamailio.cfg /etc/kamailio-gw/kamailio.cfg
COPY --chown=kamailio:kamailio fixtures/kamailio/subscriber fixtures/kamailio/version /var/lib/kamailio-gw/db/
USER kamailio
WORKDIR /var/lib/kamailio-gw
EXPOSE 5060/udp 5060/tcp
# Location: kamcmd -s unix:/var/lib/kamailio-gw/ctl.sock ul.dump
ENTRYPOINT ["kamailio", "-DD", "-E", "-f", "/etc/kamailio-gw/kamailio.cfg", "-Y", "/var/lib/kamailio-gw", "-m", "32", "-M", "8", \
            "-A", "DBURL=\"text:///var/lib/kamailio-gw/db\"", "-A", "CTL_SOCKET=\"unix:/var/lib/kamailio-gw/ctl.sock\""]
CMD ["-l", "udp:127.0.0.1:5060", "-l", "tcp:127.0.0.1:5060"]
