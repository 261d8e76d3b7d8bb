# Offline stand-in for rust:…-alpine (used by `make image` as BUILDER_IMAGE): a static busybox
# and its applets, enough for the Dockerfile's build stage to copy a prebuilt binary. The build
# context is staged by the Makefile: busybox (Debian's busybox-static).
FROM scratch
COPY busybox /bin/busybox
RUN ["/bin/busybox", "--install", "-s", "/bin"]
