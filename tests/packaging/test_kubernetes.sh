#!/usr/bin/env bash
# Checks packaging/kubernetes/ without a cluster:
#  1. both files parse as YAML and hold the expected objects;
#  2. the pod runs ferry as a native sidecar (init container with
#     restartPolicy: Always) with startup/readiness probes on /ready and a
#     liveness probe on /healthz at the admin port, read-only mounts of the
#     ConfigMap as a directory (so updates reach `watch: true`) and of the
#     Secrets; the app gets HTTP_PROXY and no INTERNAL_API_KEY; the grace
#     period leaves room for the app's preStop plus ferry's drain_timeout;
#  3. the ferry.yaml inside the ConfigMap passes `ferry -t`, with its
#     certificate, key and key-file paths pointed at throwaway ones.
# Usage: FERRY_BIN=build/ferry tests/packaging/test_kubernetes.sh
# Needs: python3 with PyYAML (Debian: python3-yaml), openssl.
set -euo pipefail

src=$(cd "$(dirname "$0")/../.." && pwd)
bin=${FERRY_BIN:-$src/build/ferry}
[ -x "$bin" ] || { echo "test_kubernetes: no ferry binary at $bin (set FERRY_BIN)" >&2; exit 1; }
command -v openssl >/dev/null || { echo "test_kubernetes: openssl not found" >&2; exit 1; }
py=
for p in python3 /usr/bin/python3; do
	if command -v "$p" >/dev/null && "$p" -c 'import yaml' 2>/dev/null; then py=$p; break; fi
done
[ -n "$py" ] || { echo "test_kubernetes: no python3 with PyYAML: install python3-yaml (tools/install-deps)" >&2; exit 1; }

tmp=$(mktemp -d "${TMPDIR:-/tmp}/ferry-k8s.XXXXXX")
trap '[ -n "${KEEP_TMP:-}" ] || rm -rf "$tmp"' EXIT

# throwaway CA and leaf, for `ferry -t` to load
(
	cd "$tmp"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 \
		-subj /CN=test-ca -keyout ca.key -out ca.crt 2>/dev/null
	openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
		-subj /CN=order-service -keyout tls.key -out tls.csr 2>/dev/null
	printf 'subjectAltName=URI:spiffe://goodgo/order-service,DNS:order-service\n' >ext.cnf
	openssl x509 -req -in tls.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 2 \
		-extfile ext.cnf -out tls.crt 2>/dev/null
	echo "k8s-test-internal-key-0123456789" >INTERNAL_API_KEY
	echo "k8s-test-inbound-key-0123456789" >inbound.keys
)

"$py" - "$src/packaging/kubernetes" "$tmp" <<'EOF'
import os, re, sys, yaml

kdir, tmp = sys.argv[1], sys.argv[2]
passed = failed = 0
def check(cond, what):
    global passed, failed
    print(("ok - " if cond else "not ok - ") + what)
    if cond: passed += 1
    else: failed += 1

def dur(s):
    m = re.fullmatch(r'(\d+)(ms|s|m|h)', str(s))
    return int(m.group(1)) * {'ms': 0.001, 's': 1, 'm': 60, 'h': 3600}[m.group(2)]

pod_docs = [d for d in yaml.safe_load_all(open(os.path.join(kdir, 'pod.yaml'))) if d]
cm_docs = [d for d in yaml.safe_load_all(open(os.path.join(kdir, 'configmap.yaml'))) if d]
kinds = sorted(d['kind'] for d in pod_docs)
check(kinds == ['NetworkPolicy', 'Pod', 'Service'], f"pod.yaml holds Pod, Service, NetworkPolicy ({kinds})")
check(len(cm_docs) == 1 and cm_docs[0]['kind'] == 'ConfigMap', "configmap.yaml holds one ConfigMap")
pod = next(d for d in pod_docs if d['kind'] == 'Pod')
cm = cm_docs[0]
conf = yaml.safe_load(cm['data']['ferry.yaml'])
spec = pod['spec']

sidecars = [c for c in spec.get('initContainers', []) if c['name'] == 'ferry']
check(len(sidecars) == 1, "ferry is an init container")
f = sidecars[0]
check(f.get('restartPolicy') == 'Always', "restartPolicy: Always (native sidecar)")
check(all(c['name'] != 'ferry' for c in spec['containers']), "ferry is not also a regular container")
ports = {p['name']: p['containerPort'] for p in f.get('ports', [])}
admin_port = int(conf['listeners']['admin']['address'].rsplit(':', 1)[1])
check(ports.get('admin') == admin_port == 15000, "admin port 15000 named 'admin'")
check(ports.get('inbound') == int(conf['listeners']['inbound']['address'].rsplit(':', 1)[1]),
      "inbound port matches the ConfigMap")
def probe(name, path):
    p = f.get(name, {}).get('httpGet', {})
    return p.get('path') == path and p.get('port') in ('admin', admin_port)
check(probe('startupProbe', '/ready'), "startupProbe GET /ready: the app starts after ferry is ready")
check(probe('readinessProbe', '/ready'), "readinessProbe GET /ready on the admin port")
check(probe('livenessProbe', '/healthz'), "livenessProbe GET /healthz on the admin port")
adm = conf['listeners']['admin']
check(not adm['address'].startswith('127.') and adm.get('allow_remote') is True,
      "admin listens beyond loopback (kubelet probes the pod IP) with allow_remote")
check(conf['listeners']['outbound']['address'].startswith('127.0.0.1:'), "outbound stays on loopback")

vols = {v['name']: v for v in spec['volumes']}
mounts = {m['name']: m for m in f['volumeMounts']}
cmvol = [n for n, v in vols.items() if v.get('configMap', {}).get('name') == cm['metadata']['name']]
check(len(cmvol) == 1, "the ConfigMap is a volume")
m = mounts.get(cmvol[0], {})
check(m.get('mountPath') == '/etc/ferry' and 'subPath' not in m and m.get('readOnly') is True,
      "ConfigMap mounted read-only as the directory /etc/ferry (no subPath: updates arrive)")
check(conf.get('watch') is True, "watch: true in the ConfigMap's ferry.yaml")
secret_mounts = [mounts[n] for n, v in vols.items() if 'secret' in v and n in mounts]
check(len(secret_mounts) >= 2 and all(x.get('readOnly') is True for x in secret_mounts),
      "Secrets mounted read-only")
sc = f.get('securityContext', {})
check(sc.get('readOnlyRootFilesystem') is True and sc.get('allowPrivilegeEscalation') is False
      and sc.get('capabilities', {}).get('drop') == ['ALL'], "ferry: read-only root, no privilege")
check(spec.get('securityContext', {}).get('runAsNonRoot') is True, "runAsNonRoot")

app = spec['containers'][0]
env = {e['name']: e.get('value') for e in app.get('env', [])}
check(env.get('HTTP_PROXY') == 'http://127.0.0.1:15001', "app: HTTP_PROXY=http://127.0.0.1:15001")
check(env.get('USER_SERVICE_URL') == 'http://user-service', "app: USER_SERVICE_URL=http://user-service")
check('user-service' in conf['services'], "the ConfigMap routes user-service")
check(not any('INTERNAL_API_KEY' in str(e) for e in app.get('env', []) + app.get('envFrom', [])),
      "the app is not given INTERNAL_API_KEY")
check(not any('secret' in vols.get(m['name'], {}) for m in app.get('volumeMounts', [])),
      "the app mounts none of ferry's Secrets")
prestop = app.get('lifecycle', {}).get('preStop', {}).get('exec', {}).get('command', [])
pre = float(prestop[-1]) if prestop[:1] == ['sleep'] else 0
grace = spec.get('terminationGracePeriodSeconds', 30)
need = pre + dur(conf.get('drain_timeout', '30s'))
check(grace > need, f"terminationGracePeriodSeconds {grace} > preStop {pre:g} + drain_timeout {need - pre:g}")

# the ConfigMap's ferry.yaml, with secrets' paths pointed at throwaway files
text = cm['data']['ferry.yaml'].replace('/etc/ferry-tls/', tmp + '/').replace('/etc/ferry-keys/', tmp + '/')
open(os.path.join(tmp, 'ferry.yaml'), 'w').write(text)
print(f"{passed} {failed}", file=open(os.path.join(tmp, 'counts'), 'w'))
EOF
read -r passed failed <"$tmp/counts"

if out=$("$bin" -t -c "$tmp/ferry.yaml" 2>&1); then
	echo "ok - ferry -t accepts the ConfigMap's ferry.yaml: $out"
	passed=$((passed + 1))
else
	printf '%s\n' "$out"
	echo "not ok - ferry -t rejects the ConfigMap's ferry.yaml"
	failed=$((failed + 1))
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
