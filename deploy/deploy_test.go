// Package deploy_test checks that the deployment files agree with each other
// and with the node's configuration: the compose file with deploy/edge.yaml,
// the Kubernetes manifests with their ConfigMap. The compose cluster itself
// runs in the end-to-end suite (deploy/e2e, make e2e).
package deploy_test

import (
	"bytes"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/meshcdn/meshcdn/gossip"
	"github.com/meshcdn/meshcdn/node"
	"github.com/meshcdn/meshcdn/node/tlsconf"
	"github.com/meshcdn/meshcdn/router"
)

// meshDir is where the deployments mount the cluster CA and gossip key.
const meshDir = "/etc/meshcdn/mesh"

// parseEdgeConfig parses an edge configuration file as `meshcdn edge`
// would, with a token standing for the one the deployment supplies and a
// CA and gossip key (as meshcdn ca init --gossip-key makes them) for the
// ones in meshDir, with the HTTPS certificate www.pem. The configuration must validate: its mesh listens beyond
// loopback, so it must carry both a gossip key and mesh TLS.
func parseEdgeConfig(t *testing.T, text string) node.Config {
	t.Helper()
	tok := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tok, []byte("t0ken\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	text = strings.ReplaceAll(text, "/etc/meshcdn/admin/token", tok)
	mesh := t.TempDir()
	if err := tlsconf.InitCA(mesh, 0); err != nil {
		t.Fatal(err)
	}
	if err := gossip.CreateKeyFile(filepath.Join(mesh, "gossip.key")); err != nil {
		t.Fatal(err)
	}
	// The HTTPS certificate, as the compose file's tls-init makes it.
	if _, err := tlsconf.Issue(mesh, "www", tlsconf.RoleServer, []string{"www.example.test"}, 0); err != nil {
		t.Fatal(err)
	}
	text = strings.ReplaceAll(text, meshDir+"/", mesh+"/")
	// Kubernetes' TLS Secret names its files tls.crt and tls.key.
	text = strings.ReplaceAll(text, "/etc/meshcdn/tls/tls.crt", filepath.Join(mesh, "www.pem"))
	text = strings.ReplaceAll(text, "/etc/meshcdn/tls/tls.key", filepath.Join(mesh, "www-key.pem"))
	cfg, err := node.ParseFile("edge.yaml", []byte(text))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.AdminToken == "" {
		cfg.AdminToken = "t0ken" // compose passes it in MESHCDN_ADMIN_TOKEN
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	m := cfg.Mesh
	if m == nil || len(m.GossipKeys) == 0 || m.Insecure || m.TLS.CAFile != filepath.Join(mesh, "ca.pem") ||
		(m.TLS.CAKeyFile != filepath.Join(mesh, "ca-key.pem") && m.TLS.CertFile == "") {
		t.Fatalf("the edges' mesh is not protected by a gossip key and mesh TLS from %s: %+v", meshDir, m)
	}
	if _, err := tlsconf.LoadMesh(m.TLS, "edge-0"); err != nil {
		t.Fatalf("mesh TLS from what meshcdn ca init makes: %v", err)
	}
	if cfg.TLSCertFile != "" {
		if _, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile); err != nil {
			t.Fatalf("the HTTPS certificate: %v", err)
		}
	}
	return cfg
}

func port(t *testing.T, addr string) string {
	t.Helper()
	_, p, err := net.SplitHostPort(addr)
	if err != nil {
		t.Fatalf("%q: %v", addr, err)
	}
	return p
}

func TestComposeFile(t *testing.T) {
	edgeYAML, err := os.ReadFile("edge.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cfg := parseEdgeConfig(t, string(edgeYAML))
	raw, err := os.ReadFile("docker-compose.yml")
	if err != nil {
		t.Fatal(err)
	}
	var compose struct {
		Services map[string]struct {
			Command     []string
			Scale       int
			Environment map[string]string
			Ports       []string
			Volumes     []string
			DependsOn   map[string]struct{ Condition string } `yaml:"depends_on"`
			Health      *struct{ Test []string }              `yaml:"healthcheck"`
			Grace       string                                `yaml:"stop_grace_period"`
		}
		Volumes map[string]any
	}
	if err := yaml.Unmarshal(raw, &compose); err != nil {
		t.Fatal(err)
	}
	// The commands the header shows name the project make cluster-up uses,
	// or they would start a second project that collides with its ports.
	for l := range strings.Lines(string(raw)) {
		if strings.HasPrefix(l, "#") && strings.Contains(l, "-f deploy/docker-compose.yml") && !strings.Contains(l, "-p meshcdn") {
			t.Errorf("a command in the header lacks -p meshcdn: %s", strings.TrimSpace(l))
		}
	}
	origin, init := compose.Services["origin"], compose.Services["mesh-init"]
	// Two regions of two edges, one service each, sharing edge.yaml: region
	// a from the file (the shield), b from the environment.
	if cfg.Mesh == nil || cfg.Mesh.Region != "a" || cfg.Mesh.ShieldRegion != "a" {
		t.Errorf("edge.yaml: region and shield region %+v; want a and a", cfg.Mesh)
	}
	if got := compose.Services["edge-b"].Environment["MESHCDN_REGION"]; got != "b" {
		t.Errorf("edge-b's MESHCDN_REGION is %q; want b", got)
	}
	for _, name := range []string{"edge", "edge-b"} {
		edge := compose.Services[name]
		if edge.Scale != 2 {
			t.Errorf("%s scale %d, want 2 by default", name, edge.Scale)
		}
		// Every replica publishes its client and admin port from a range.
		for _, p := range []string{port(t, cfg.HTTPAddr), port(t, cfg.AdminAddr)} {
			ranged := slices.ContainsFunc(edge.Ports, func(s string) bool {
				host, ok := strings.CutSuffix(s, ":"+p)
				return ok && strings.Contains(host, "-") // e.g. 127.0.0.1:${MESHCDN_HTTP_PORTS:-8080-8089}
			})
			if !ranged {
				t.Errorf("%s port %s is not published from a range: %v", name, p, edge.Ports)
			}
		}
		if !slices.Contains(edge.Volumes, "./edge.yaml:/etc/meshcdn/edge.yaml:ro") || !slices.Contains(edge.Command, "/etc/meshcdn/edge.yaml") {
			t.Errorf("%s: edge.yaml is not mounted read-only where the command reads it: %v %v", name, edge.Volumes, edge.Command)
		}
		if edge.DependsOn["origin"].Condition != "service_healthy" || origin.Health == nil {
			t.Errorf("%s does not wait for a healthy origin", name)
		}
		for _, v := range edge.Volumes {
			if src, _, ok := strings.Cut(v, ":"); !ok || src == "" {
				t.Errorf("%s volume %q is anonymous: it outlives a scale-in", name, v)
			}
		}
		// mesh-init makes the CA and gossip key in the mesh volume once,
		// then tls-init the HTTPS certificate, before any edge starts; the
		// edges read them there.
		if !slices.Contains(edge.Volumes, "mesh:"+meshDir+":ro") || edge.DependsOn["tls-init"].Condition != "service_completed_successfully" {
			t.Errorf("%s does not read the mesh secrets mesh-init and tls-init made: %+v", name, edge)
		}
		// HTTPS and HTTP/3 from one range, over TCP and UDP.
		https := port(t, cfg.HTTPSAddr)
		for _, proto := range []string{"tcp", "udp"} {
			if !slices.ContainsFunc(edge.Ports, func(s string) bool {
				host, ok := strings.CutSuffix(s, ":"+https+"/"+proto)
				return ok && strings.Contains(host, "-")
			}) {
				t.Errorf("%s does not publish %s/%s from a range: %v", name, https, proto, edge.Ports)
			}
		}
		// Docker kills an edge only after its own shutdown bound, which
		// includes the drain before it stops.
		if grace, err := time.ParseDuration(edge.Grace); err != nil || grace <= shutdownTimeout(cfg) {
			t.Errorf("%s stop_grace_period %q is not above the shutdown timeout %v", name, edge.Grace, shutdownTimeout(cfg))
		}
	}
	// The edges' origin is the origin service on the port it listens on, and
	// they join each other through the edge service's name.
	if len(cfg.Origins) != 1 || cfg.Origins[0].Hostname() != "origin" || !slices.Contains(origin.Command, ":"+cfg.Origins[0].Port()) {
		t.Errorf("edge origin %v does not match the origin service %v", cfg.Origins, origin.Command)
	}
	if cfg.Mesh == nil || len(cfg.Mesh.Join) != 1 || cfg.Mesh.Join[0] != "edge:"+port(t, cfg.Mesh.GossipAddr) {
		t.Errorf("edges do not join through the service name: %+v", cfg.Mesh)
	}
	// No anonymous volume: compose removes scaled-in replicas without their
	// volumes, and make cluster-down cannot find those any more. The disk
	// tier stays in each container's layer.
	if cfg.CacheDir != "/var/cache/meshcdn" {
		t.Errorf("cache_dir %q, want /var/cache/meshcdn", cfg.CacheDir)
	}
	if dockerfile, err := os.ReadFile("Dockerfile"); err != nil || regexp.MustCompile(`(?m)^VOLUME`).Match(dockerfile) {
		t.Errorf("the Dockerfile declares a VOLUME (or cannot be read: %v): every container leaves an anonymous volume", err)
	}
	if _, ok := compose.Volumes["mesh"]; !ok ||
		!slices.Equal(init.Command, []string{"ca", "init", "--dir", meshDir, "--gossip-key", "--if-absent"}) ||
		!slices.Contains(init.Volumes, "mesh:"+meshDir) {
		t.Errorf("the mesh secrets are not made by mesh-init in the mesh volume: %+v", init)
	}
	tlsInit := compose.Services["tls-init"]
	if !cfg.HTTP3 || filepath.Base(cfg.TLSCertFile) != "www.pem" || filepath.Base(cfg.TLSKeyFile) != "www-key.pem" ||
		!slices.Equal(tlsInit.Command[:8], []string{"ca", "issue", "--dir", meshDir, "--name", "www", "--role", "server"}) ||
		!slices.Contains(tlsInit.Command, "--if-absent") || !slices.Contains(tlsInit.Volumes, "mesh:"+meshDir) ||
		tlsInit.DependsOn["mesh-init"].Condition != "service_completed_successfully" {
		t.Errorf("the edges' HTTPS certificate (%s, HTTP/3 %v) is not the one tls-init makes with the cluster CA: %+v", cfg.TLSCertFile, cfg.HTTP3, tlsInit)
	}
	// The router reads router.yaml and the zone file where they are mounted,
	// after mesh-init, and publishes its DNS (UDP and TCP) and HTTP ports.
	rt := compose.Services["router"]
	if !slices.Equal(rt.Command, []string{"router", "--config", "/etc/meshcdn/router.yaml"}) ||
		!slices.Contains(rt.Volumes, "./router.yaml:/etc/meshcdn/router.yaml:ro") ||
		!slices.Contains(rt.Volumes, "./zones.json:/etc/meshcdn/zones.json:ro") ||
		!slices.Contains(rt.Volumes, "mesh:"+meshDir+":ro") || rt.DependsOn["mesh-init"].Condition != "service_completed_successfully" {
		t.Errorf("router: %+v", rt)
	}
	for _, want := range []string{":53/udp", ":53/tcp", ":80"} {
		if !slices.ContainsFunc(rt.Ports, func(p string) bool { return strings.HasSuffix(p, want) }) {
			t.Errorf("the router does not publish %s: %v", want, rt.Ports)
		}
	}
	if _, err := router.LoadZones("zones.json"); err != nil {
		t.Error(err)
	}
}

// shutdownTimeout is a node's effective bound on its shutdown.
func shutdownTimeout(cfg node.Config) time.Duration {
	if cfg.ShutdownTimeout == 0 {
		return node.DefaultShutdownTimeout
	}
	return cfg.ShutdownTimeout
}

// manifest is one Kubernetes object of deploy/kubernetes.
type manifest struct {
	Kind     string
	Metadata struct{ Name string }
	Data     map[string]string
	Spec     yaml.Node
}

func TestKubernetesManifests(t *testing.T) {
	var objs []manifest
	for _, f := range []string{"configmap.yaml", "services.yaml", "statefulset.yaml", "router.yaml"} {
		raw, err := os.ReadFile(filepath.Join("kubernetes", f))
		if err != nil {
			t.Fatal(err)
		}
		dec := yaml.NewDecoder(bytes.NewReader(raw))
		for {
			var o manifest
			if err := dec.Decode(&o); errors.Is(err, io.EOF) {
				break
			} else if err != nil {
				t.Fatalf("%s: %v", f, err)
			}
			objs = append(objs, o)
		}
	}
	find := func(kind, name string) *manifest {
		for i, o := range objs {
			if o.Kind == kind && o.Metadata.Name == name {
				return &objs[i]
			}
		}
		t.Fatalf("no %s %s", kind, name)
		return nil
	}
	cfg := parseEdgeConfig(t, find("ConfigMap", "meshcdn-edge").Data["edge.yaml"])

	var headless struct {
		ClusterIP                string `yaml:"clusterIP"`
		PublishNotReadyAddresses bool   `yaml:"publishNotReadyAddresses"`
	}
	if err := find("Service", "meshcdn-edge-peers").Spec.Decode(&headless); err != nil {
		t.Fatal(err)
	}
	if headless.ClusterIP != "None" || !headless.PublishNotReadyAddresses {
		t.Errorf("the peers Service must be headless and publish pods before they are ready: %+v", headless)
	}
	if cfg.Mesh == nil || len(cfg.Mesh.Join) != 1 || cfg.Mesh.Join[0] != "meshcdn-edge-peers:"+port(t, cfg.Mesh.GossipAddr) {
		t.Errorf("edges do not join through the headless Service: %+v", cfg.Mesh)
	}

	type probe struct {
		HTTPGet struct {
			Path string
			Port string
		} `yaml:"httpGet"`
	}
	var sts struct {
		ServiceName string `yaml:"serviceName"`
		Template    struct {
			Spec struct {
				Grace      int `yaml:"terminationGracePeriodSeconds"`
				Containers []struct {
					Args  []string
					Ports []struct {
						Name          string
						ContainerPort int `yaml:"containerPort"`
					}
					Readiness    probe `yaml:"readinessProbe"`
					Liveness     probe `yaml:"livenessProbe"`
					VolumeMounts []struct {
						Name      string
						MountPath string `yaml:"mountPath"`
					} `yaml:"volumeMounts"`
				}
				Volumes []struct {
					Name   string
					Secret *struct {
						SecretName  string `yaml:"secretName"`
						DefaultMode int    `yaml:"defaultMode"`
					}
				}
			}
		}
	}
	if err := find("StatefulSet", "meshcdn-edge").Spec.Decode(&sts); err != nil {
		t.Fatal(err)
	}
	if sts.ServiceName != "meshcdn-edge-peers" || len(sts.Template.Spec.Containers) != 1 {
		t.Fatalf("statefulset: %+v", sts)
	}
	if grace := time.Duration(sts.Template.Spec.Grace) * time.Second; grace <= shutdownTimeout(cfg) {
		t.Errorf("terminationGracePeriodSeconds %v is not above the shutdown timeout %v", grace, shutdownTimeout(cfg))
	}
	c := sts.Template.Spec.Containers[0]
	ports := map[string]string{}
	for _, p := range c.Ports {
		ports[p.Name] = ":" + strconv.Itoa(p.ContainerPort)
	}
	for name, addr := range map[string]string{"http": cfg.HTTPAddr, "metrics": cfg.MetricsAddr, "admin": cfg.AdminAddr,
		"peer": cfg.Mesh.PeerAddr, "gossip-tcp": cfg.Mesh.GossipAddr, "gossip-udp": cfg.Mesh.GossipAddr,
		"https-tcp": cfg.HTTPSAddr, "https-udp": cfg.HTTPSAddr} {
		if port(t, ports[name]) != port(t, addr) {
			t.Errorf("container port %s is %q, the configuration listens on %s", name, ports[name], addr)
		}
	}
	if c.Readiness.HTTPGet.Path != "/readyz" || c.Readiness.HTTPGet.Port != "metrics" || c.Liveness.HTTPGet.Path != "/healthz" {
		t.Errorf("probes: readiness %+v, liveness %+v", c.Readiness, c.Liveness)
	}
	mountOf := func(path string) string { // the volume the path is on: the longest mount path over it
		name, longest := "", 0
		for _, m := range c.VolumeMounts {
			if strings.HasPrefix(path+"/", strings.TrimSuffix(m.MountPath, "/")+"/") && len(m.MountPath) > longest {
				name, longest = m.Name, len(m.MountPath)
			}
		}
		return name
	}
	mounted := func(path string) bool { return mountOf(path) != "" }
	// The mesh secrets come from the Secret meshcdn-mesh, readable by the
	// pod's group (fsGroup), not by others.
	meshVol := mountOf(meshDir + "/ca.pem")
	i := slices.IndexFunc(sts.Template.Spec.Volumes, func(v struct {
		Name   string
		Secret *struct {
			SecretName  string `yaml:"secretName"`
			DefaultMode int    `yaml:"defaultMode"`
		}
	}) bool {
		return v.Name == meshVol
	})
	if i < 0 || sts.Template.Spec.Volumes[i].Secret == nil || sts.Template.Spec.Volumes[i].Secret.SecretName != "meshcdn-mesh" ||
		sts.Template.Spec.Volumes[i].Secret.DefaultMode != 0o440 {
		t.Errorf("%s is not the Secret meshcdn-mesh with mode 0440: %+v", meshDir, sts.Template.Spec.Volumes)
	}
	if !mounted(cfg.CacheDir) || !slices.Contains(c.Args, "/etc/meshcdn/edge.yaml") || !mounted("/etc/meshcdn/edge.yaml") {
		t.Errorf("the cache dir %s or the config file is not mounted: %+v %v", cfg.CacheDir, c.VolumeMounts, c.Args)
	}
	// The HTTPS certificate comes from the TLS Secret meshcdn-tls.
	tlsVol := mountOf("/etc/meshcdn/tls/tls.crt")
	if !slices.ContainsFunc(sts.Template.Spec.Volumes, func(v struct {
		Name   string
		Secret *struct {
			SecretName  string `yaml:"secretName"`
			DefaultMode int    `yaml:"defaultMode"`
		}
	}) bool {
		return v.Name == tlsVol && v.Secret != nil && v.Secret.SecretName == "meshcdn-tls" && v.Secret.DefaultMode == 0o440
	}) {
		t.Errorf("/etc/meshcdn/tls is not the Secret meshcdn-tls with mode 0440: %+v", sts.Template.Spec.Volumes)
	}
	// The client Service carries HTTPS over TCP and HTTP/3 over UDP on the
	// port Alt-Svc names.
	var svc struct {
		Ports []struct {
			Name, Protocol string
			Port           int
			TargetPort     string `yaml:"targetPort"`
		}
	}
	if err := find("Service", "meshcdn-edge").Spec.Decode(&svc); err != nil {
		t.Fatal(err)
	}
	for _, want := range []struct{ target, proto string }{{"https-tcp", "TCP"}, {"https-udp", "UDP"}} {
		if !slices.ContainsFunc(svc.Ports, func(p struct {
			Name, Protocol string
			Port           int
			TargetPort     string `yaml:"targetPort"`
		}) bool {
			return p.TargetPort == want.target && p.Protocol == want.proto && p.Port == cfg.HTTP3AdvertisedPort
		}) {
			t.Errorf("the Service meshcdn-edge does not carry %s on %s port %d (http3_advertised_port): %+v", want.target, want.proto, cfg.HTTP3AdvertisedPort, svc.Ports)
		}
	}
	kubernetesRouter(t, cfg, find)
}

// kubernetesRouter checks the router's manifests: its configuration's
// listeners are the container's ports and the Service's targets, its zones
// name the edges' region, it joins through the edges' headless Service and
// reads the mesh Secret as they do.
func kubernetesRouter(t *testing.T, edgeCfg node.Config, find func(kind, name string) *manifest) {
	t.Helper()
	cm := find("ConfigMap", "meshcdn-router")
	var rc struct {
		Router struct {
			DNS, HTTP, Metrics, Zones string
			DefaultRegion             string `yaml:"default_region"`
		}
		Mesh struct {
			Gossip, Peer string
			Join         []string
		}
	}
	if err := yaml.Unmarshal([]byte(cm.Data["router.yaml"]), &rc); err != nil {
		t.Fatal(err)
	}
	z, err := router.ParseZones([]byte(cm.Data["zones.json"]))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := z.Region(edgeCfg.Mesh.Region); !ok || rc.Router.DefaultRegion != edgeCfg.Mesh.Region {
		t.Errorf("the router's zones and default region %q do not name the edges' region %q", rc.Router.DefaultRegion, edgeCfg.Mesh.Region)
	}
	if len(rc.Mesh.Join) != 1 || rc.Mesh.Join[0] != "meshcdn-edge-peers:"+port(t, edgeCfg.Mesh.GossipAddr) {
		t.Errorf("the router does not join through the edges' headless Service: %v", rc.Mesh.Join)
	}
	var dep struct {
		Template struct {
			Spec struct {
				Containers []struct {
					Args  []string
					Ports []struct {
						Name          string
						ContainerPort int `yaml:"containerPort"`
					}
					Readiness struct {
						HTTPGet struct{ Path, Port string } `yaml:"httpGet"`
					} `yaml:"readinessProbe"`
					VolumeMounts []struct {
						Name      string
						MountPath string `yaml:"mountPath"`
					} `yaml:"volumeMounts"`
				}
				Volumes []struct {
					Name      string
					ConfigMap *struct{ Name string } `yaml:"configMap"`
					Secret    *struct {
						SecretName  string `yaml:"secretName"`
						DefaultMode int    `yaml:"defaultMode"`
					}
				}
			}
		}
	}
	if err := find("Deployment", "meshcdn-router").Spec.Decode(&dep); err != nil {
		t.Fatal(err)
	}
	if len(dep.Template.Spec.Containers) != 1 {
		t.Fatalf("router deployment: %+v", dep)
	}
	c := dep.Template.Spec.Containers[0]
	ports := map[string]string{}
	for _, p := range c.Ports {
		ports[p.Name] = ":" + strconv.Itoa(p.ContainerPort)
	}
	for name, addr := range map[string]string{"dns-udp": rc.Router.DNS, "dns-tcp": rc.Router.DNS, "http": rc.Router.HTTP,
		"metrics": rc.Router.Metrics, "peer": rc.Mesh.Peer, "gossip-tcp": rc.Mesh.Gossip, "gossip-udp": rc.Mesh.Gossip} {
		if port(t, ports[name]) != port(t, addr) {
			t.Errorf("router container port %s is %q, its configuration listens on %s", name, ports[name], addr)
		}
	}
	if c.Readiness.HTTPGet.Path != "/readyz" || c.Readiness.HTTPGet.Port != "metrics" {
		t.Errorf("router readiness: %+v", c.Readiness)
	}
	mountOf := map[string]string{}
	for _, m := range c.VolumeMounts {
		mountOf[m.MountPath] = m.Name
	}
	cfgVol, meshVol := mountOf[filepath.Dir(rc.Router.Zones)], mountOf[meshDir]
	if !slices.Contains(c.Args, filepath.Join(filepath.Dir(rc.Router.Zones), "router.yaml")) {
		t.Errorf("the router reads %v; its ConfigMap is mounted at %s", c.Args, filepath.Dir(rc.Router.Zones))
	}
	for _, v := range dep.Template.Spec.Volumes {
		switch v.Name {
		case cfgVol:
			if v.ConfigMap == nil || v.ConfigMap.Name != "meshcdn-router" {
				t.Errorf("volume %s is not the ConfigMap meshcdn-router: %+v", v.Name, v)
			}
		case meshVol:
			if v.Secret == nil || v.Secret.SecretName != "meshcdn-mesh" || v.Secret.DefaultMode != 0o440 {
				t.Errorf("volume %s is not the Secret meshcdn-mesh with mode 0440: %+v", v.Name, v)
			}
		}
	}
	var svc struct {
		Ports []struct {
			Name       string
			Port       int
			TargetPort string `yaml:"targetPort"`
		}
	}
	if err := find("Service", "meshcdn-router").Spec.Decode(&svc); err != nil {
		t.Fatal(err)
	}
	for _, p := range svc.Ports {
		if _, ok := ports[p.TargetPort]; !ok {
			t.Errorf("Service port %s targets %q, which the container does not name", p.Name, p.TargetPort)
		}
	}
}
