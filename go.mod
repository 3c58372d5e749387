module github.com/meshcdn/meshcdn

go 1.26.8

require (
	github.com/dustin/go-humanize v1.1.0
	github.com/maypok86/otter/v2 v2.4.0
	go.yaml.in/yaml/v3 v3.0.6
)
