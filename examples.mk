# Runnable examples against the demo's local S3 server (included by the Makefile).
# Each target starts the server if needed and LEAVES IT RUNNING in the background, so examples
# can build on each other (its data is in .demo/s3); `make example-stop` stops it, and
# `make examples` runs them all and then stops it.
#   make example-upload example-restore example-dry-run example-refusal example-schedule
#        example-watch example-metrics example-encrypted example-inject example-replicate

EXAMPLE_STATE := .demo
EXAMPLE_ENV = eval "$$(scripts/s3-server.sh env $(EXAMPLE_STATE))"

.PHONY: example-server example-stop example-upload example-restore example-dry-run example-refusal \
	example-schedule example-watch example-metrics example-encrypted example-inject example-replicate \
	examples

example-server: tools build
	@scripts/s3-server.sh start $(EXAMPLE_STATE)
	@echo "the local S3 server keeps running after this example (pid $$(cat $(EXAMPLE_STATE)/pid)," \
	  "data in $(EXAMPLE_STATE)/s3); stop it with: make example-stop" >&2

example-stop:
	scripts/s3-server.sh stop $(EXAMPLE_STATE)
	@echo "local S3 server stopped ($(EXAMPLE_STATE) is kept; make clean removes it)"

## Upload examples/data to remote:demo/example.
example-upload: example-server
	$(EXAMPLE_ENV) && $(BIN) sync-to-remote -s examples/data -d demo/example

## Replicate remote:demo/example to remote:demo/replica, server to server (remote-to-remote-sync;
## here the source, SOURCE_*, is the same demo server as the destination, REMOTE_*).
example-replicate: example-upload
	$(EXAMPLE_ENV) && eval "$$(scripts/s3-server.sh env $(EXAMPLE_STATE) | sed 's/REMOTE_/SOURCE_/')" && \
	  $(BIN) remote-to-remote-sync -s demo/example -d demo/replica

## Restore remote:demo/example into .demo/example-restored (an init container's job).
example-restore: example-upload
	$(EXAMPLE_ENV) && $(BIN) remote-to-local-sync --if-local-empty -s demo/example -d $(EXAMPLE_STATE)/example-restored
	diff -r examples/data $(EXAMPLE_STATE)/example-restored && echo "restored tree is identical"

## Show what a sync would do without changing anything.
example-dry-run: example-upload
	$(EXAMPLE_ENV) && $(BIN) sync-to-remote --dry-run -v -s examples/data -d demo/example -- --max-age 1h

## A safety valve refusing a restore that would delete local data (exit 3): the remote path is
## empty while the local directory holds a file (rule empty-remote). Restores into a directory
## owned by root or by another user are refused by an earlier rule (foreign-owner), so as root
## the directory is given to an unprivileged uid and the restore runs as that uid, as in a Pod.
EXAMPLE_UID := 65312
EXAMPLE_AS_USER := $(if $(filter 0,$(shell id -u)),setpriv --reuid=$(EXAMPLE_UID) --regid=$(EXAMPLE_UID) --clear-groups)
example-refusal: example-server
	rm -rf $(EXAMPLE_STATE)/precious
	mkdir -p $(EXAMPLE_STATE)/precious && echo keep > $(EXAMPLE_STATE)/precious/data.txt
	$(if $(EXAMPLE_AS_USER),chown -R $(EXAMPLE_UID):$(EXAMPLE_UID) $(EXAMPLE_STATE)/precious)
	@echo "expect: ERROR ... refused by safety rule 'empty-remote', exit code 3 (the point of this example)"
	$(EXAMPLE_ENV) && $(EXAMPLE_AS_USER) $(BIN) remote-to-local-sync -s demo/no-such-path -d $(EXAMPLE_STATE)/precious \
	  > $(EXAMPLE_STATE)/refusal.log 2>&1; code=$$?; cat $(EXAMPLE_STATE)/refusal.log; echo "exit code $$code"; \
	  test $$code -eq 3 && grep -q "safety rule 'empty-remote'" $(EXAMPLE_STATE)/refusal.log
	test -f $(EXAMPLE_STATE)/precious/data.txt && echo "example-refusal ok: refused by empty-remote, local data kept"

## The sidecar: sync every 2 seconds, stop with SIGTERM after 5 seconds (one final sync, exit 0).
example-schedule: example-server
	$(EXAMPLE_ENV) && { $(BIN) sync-to-remote --schedule '@every 2s' --pid-path $(EXAMPLE_STATE)/vso.pid \
	  -s examples/data -d demo/scheduled & sleep 5; $(BIN) interrupt --pid-path $(EXAMPLE_STATE)/vso.pid; }

## Sync on change: a file written into the watched tree is uploaded within ~1s, then the
## preStop-style interrupt runs the final sync.
example-watch: example-server
	rm -rf $(EXAMPLE_STATE)/watched && cp -r examples/data $(EXAMPLE_STATE)/watched
	$(EXAMPLE_ENV) && { $(BIN) sync-to-remote --watch --debounce 500ms --pid-path $(EXAMPLE_STATE)/watch.pid \
	  -s $(EXAMPLE_STATE)/watched -d demo/watched & sleep 2; \
	  echo "written at $$(date)" > $(EXAMPLE_STATE)/watched/new-file.txt; sleep 2; \
	  $(BIN) interrupt --pid-path $(EXAMPLE_STATE)/watch.pid; }
	test -f $(EXAMPLE_STATE)/s3/demo/watched/new-file.txt && echo "new-file.txt is on the remote"

## Metrics and health of a scheduled sidecar: scrape /metrics and /healthz, then stop it.
example-metrics: example-server
	$(EXAMPLE_ENV) && { $(BIN) sync-to-remote --schedule '@every 1m' --metrics-address 127.0.0.1:19090 \
	  --pid-path $(EXAMPLE_STATE)/metrics.pid -s examples/data -d demo/metrics & sleep 2; \
	  python3 -c 'import urllib.request as u; print(u.urlopen("http://127.0.0.1:19090/healthz").read().decode()); \
	    print(u.urlopen("http://127.0.0.1:19090/metrics").read().decode())' | grep -v '^#'; \
	  $(BIN) interrupt --pid-path $(EXAMPLE_STATE)/metrics.pid; }

## End-to-end encryption with a passphrase: the server stores only ciphertext.
example-encrypted: example-server
	rm -rf $(EXAMPLE_STATE)/decrypted
	$(EXAMPLE_ENV) && export ENCRYPTION_PASSPHRASE='demo passphrase, back it up' && \
	  $(BIN) sync-to-remote -s examples/data -d demo/encrypted && \
	  $(BIN) remote-to-local-sync -s demo/encrypted -d $(EXAMPLE_STATE)/decrypted
	diff -r examples/data $(EXAMPLE_STATE)/decrypted && echo "decrypted tree is identical"
	@echo "stored names:" && find $(EXAMPLE_STATE)/s3/demo/encrypted -type f | head -3

## Kubernetes, offline: add the containers of a PodFilesystemSync to a plain Deployment
## (no cluster, no server), show what was added, then a resource with a typo: exit 2, no output.
example-inject: build
	mkdir -p $(EXAMPLE_STATE)
	$(BIN) inject -f deploy/kubernetes/app/deployment.yaml --sync deploy/kubernetes/app/sync.yaml \
	  > $(EXAMPLE_STATE)/deployment-injected.yaml
	grep -E '^ +(- name: (init-volume-restore|volume-syncing-sidecar)|name: (init-volume-restore|volume-syncing-sidecar)|riotkit.org/)' \
	  $(EXAMPLE_STATE)/deployment-injected.yaml
	sed 's/localPath:/localPth:/' deploy/kubernetes/app/sync.yaml > $(EXAMPLE_STATE)/typo-sync.yaml
	$(BIN) inject -f deploy/kubernetes/app/deployment.yaml --sync $(EXAMPLE_STATE)/typo-sync.yaml \
	  > $(EXAMPLE_STATE)/typo-out.yaml; code=$$?; echo "exit code $$code"; test $$code -eq 2
	test ! -s $(EXAMPLE_STATE)/typo-out.yaml && echo "nothing printed on error"

## Run all examples, then stop the server.
examples: example-restore example-dry-run example-refusal example-schedule example-watch \
	example-metrics example-encrypted example-inject example-replicate
	$(MAKE) example-stop
