package diego

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/cloudfoundry/go-cfclient/v3/client"
	"github.com/cloudfoundry/go-cfclient/v3/resource"

	"github.com/ironcf/ironworker-release/src/backend"
)

// appName is the CF app of a code revision.
func (b *Backend) appName(spec backend.Spec) string {
	id := spec.CodeID
	if id == "" {
		id = spec.CodeName
	}
	return b.cfg.AppNamePrefix + "-code-" + labelValue(id) + "-r" + strconv.Itoa(spec.CodeRev)
}

func (b *Backend) appLock(key string) *sync.Mutex {
	b.appMu.Lock()
	defer b.appMu.Unlock()
	m := b.appLocks[key]
	if m == nil {
		m = &sync.Mutex{}
		b.appLocks[key] = m
	}
	return m
}

// ensureApp returns the guid of the staged CF app of spec's code revision, from the
// cache, else found by name (another runner made it), else created and staged.
func (b *Backend) ensureApp(ctx context.Context, spec backend.Spec, spaceGUID string) (string, error) {
	key := CodeRevisionKey(spec, spaceGUID)
	if guid, ok, err := b.opts.AppCache.Get(ctx, key); err != nil {
		return "", fmt.Errorf("diego backend: app cache: %w", err)
	} else if ok {
		return guid, nil
	}
	l := b.appLock(key)
	l.Lock()
	defer l.Unlock()
	if guid, ok, err := b.opts.AppCache.Get(ctx, key); err != nil {
		return "", fmt.Errorf("diego backend: app cache: %w", err)
	} else if ok {
		return guid, nil
	}
	guid, err := b.makeApp(ctx, spec, spaceGUID)
	if err != nil {
		if dockerDisabled(err) && !errors.Is(err, ErrDockerDisabled) {
			return "", fmt.Errorf("%w: %w (%v)", backend.ErrUnsupportedCode, ErrDockerDisabled, err)
		}
		return "", err
	}
	if err := b.opts.AppCache.Put(ctx, key, guid); err != nil {
		return "", fmt.Errorf("diego backend: app cache: %w", err)
	}
	return guid, nil
}

func (b *Backend) makeApp(ctx context.Context, spec backend.Spec, spaceGUID string) (string, error) {
	name := b.appName(spec)
	docker := spec.Archive == nil
	var app *resource.App
	err := b.call(ctx, func(ctx context.Context) error {
		opts := client.NewAppListOptions()
		opts.Names.EqualTo(name)
		opts.SpaceGUIDs.EqualTo(spaceGUID)
		list, _, err := b.cf.Applications.List(ctx, opts)
		if err != nil {
			return err
		}
		app = nil
		if len(list) > 0 {
			app = list[0]
		}
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("diego backend: look up app %s: %w", name, err)
	}
	if app != nil {
		if has, err := b.hasDroplet(ctx, app.GUID); err != nil {
			return "", err
		} else if has {
			return app.GUID, nil
		}
	} else {
		if docker {
			if err := b.checkDocker(ctx); err != nil {
				return "", err
			}
		}
		app, err = b.createApp(ctx, spec, spaceGUID, name, docker)
		if err != nil {
			return "", err
		}
	}
	if err := b.stage(ctx, spec, app.GUID, docker); err != nil {
		return "", err
	}
	return app.GUID, nil
}

func (b *Backend) hasDroplet(ctx context.Context, appGUID string) (bool, error) {
	has := false
	err := b.call(ctx, func(ctx context.Context) error {
		_, err := b.cf.Droplets.GetCurrentAssociationForApp(ctx, appGUID)
		if err != nil {
			if resource.IsResourceNotFoundError(err) {
				has = false
				return nil
			}
			return err
		}
		has = true
		return nil
	})
	if err != nil {
		return false, fmt.Errorf("diego backend: current droplet of app %s: %w", appGUID, err)
	}
	return has, nil
}

// checkDocker reads the diego_docker feature flag, so that a disabled flag is reported
// by name before anything is created.
func (b *Backend) checkDocker(ctx context.Context) error {
	var ff *resource.FeatureFlag
	err := b.call(ctx, func(ctx context.Context) (err error) {
		ff, err = b.cf.FeatureFlags.Get(ctx, resource.FeatureFlagDiegoDocker)
		return err
	})
	if err != nil {
		return fmt.Errorf("diego backend: read feature flag diego_docker: %w", err)
	}
	if !ff.Enabled {
		return fmt.Errorf("%w: %w", backend.ErrUnsupportedCode, ErrDockerDisabled)
	}
	return nil
}

func (b *Backend) createApp(ctx context.Context, spec backend.Spec, spaceGUID, name string, docker bool) (*resource.App, error) {
	req := resource.NewAppCreate(name, spaceGUID)
	if docker {
		req.Lifecycle = &resource.Lifecycle{Type: "docker", Data: &resource.DockerLifecycle{}}
	} else {
		req.Lifecycle = &resource.Lifecycle{Type: "buildpack", Data: &resource.BuildpackLifecycle{Buildpacks: b.cfg.Buildpacks, Stack: b.cfg.Stack}}
	}
	if len(spec.EnvVars) > 0 {
		req.EnvironmentVariables = map[string]string{}
		for k, v := range spec.EnvVars {
			if k == "" || strings.ContainsAny(k, "=\x00") || strings.HasPrefix(k, "VCAP_") || k == "PORT" {
				return nil, fmt.Errorf("%w: env_vars name %q cannot be set on a Cloud Foundry app", backend.ErrBadCode, k)
			}
			req.EnvironmentVariables[k] = v
		}
	}
	md := resource.NewMetadata().WithLabel("ironworker.io", "code-rev", strconv.Itoa(spec.CodeRev))
	if spec.CodeID != "" {
		md.WithLabel("ironworker.io", "code-id", labelValue(spec.CodeID))
	}
	if spec.ProjectID != "" {
		md.WithLabel("ironworker.io", "project-id", labelValue(spec.ProjectID))
	}
	req.Metadata = md
	var app *resource.App
	err := b.call(ctx, func(ctx context.Context) (err error) {
		app, err = b.cf.Applications.Create(ctx, req)
		if err != nil && isUniqueness(err) {
			// Another runner created it meanwhile (or our earlier attempt did).
			opts := client.NewAppListOptions()
			opts.Names.EqualTo(name)
			opts.SpaceGUIDs.EqualTo(spaceGUID)
			a, lerr := b.cf.Applications.First(ctx, opts)
			if lerr != nil {
				return lerr
			}
			app = a
			return nil
		}
		return err
	})
	if err != nil {
		if dockerDisabled(err) {
			return nil, fmt.Errorf("%w: %w", backend.ErrUnsupportedCode, ErrDockerDisabled)
		}
		return nil, fmt.Errorf("diego backend: create app %s: %w", name, err)
	}
	return app, nil
}

// isUniqueness tells a name clash: CC v3 answers 422 CF-UnprocessableEntity with a
// message such as "App with the name 'x' already exists." or "Name must be unique per
// organization" (v2 had CF-UniquenessError, 10016).
// dockerDisabled tells CC's refusal of docker apps, packages, builds or tasks.
func dockerDisabled(err error) bool {
	return resource.IsFeatureDisabledError(err) && strings.Contains(err.Error(), "diego_docker")
}

func isUniqueness(err error) bool {
	var cf resource.CloudFoundryError
	if !errors.As(err, &cf) {
		return false
	}
	d := strings.ToLower(cf.Detail)
	return cf.Title == "CF-UniquenessError" ||
		(cf.Code == 10008 && (strings.Contains(d, "already exists") || strings.Contains(d, "must be unique")))
}

// stage makes the app's current droplet: a docker package, or a bits package with the
// code's zip uploaded, built into a droplet.
func (b *Backend) stage(ctx context.Context, spec backend.Spec, appGUID string, docker bool) error {
	ctx, cancel := context.WithTimeout(ctx, b.cfg.StagingTimeout.Std())
	defer cancel()
	var pkg *resource.Package
	err := b.call(ctx, func(ctx context.Context) (err error) {
		if docker {
			pkg, err = b.cf.Packages.Create(ctx, resource.NewDockerPackageCreate(appGUID, spec.Image, spec.ImageUsername, spec.ImagePassword))
		} else {
			pkg, err = b.cf.Packages.Create(ctx, resource.NewPackageCreate(appGUID))
		}
		return err
	})
	if err != nil {
		return fmt.Errorf("diego backend: create package for app %s: %w", appGUID, err)
	}
	if !docker {
		rc, err := spec.Archive(ctx)
		if err != nil {
			return fmt.Errorf("diego backend: fetch code package: %w", err)
		}
		bits, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return fmt.Errorf("diego backend: fetch code package: %w", err)
		}
		err = b.call(ctx, func(ctx context.Context) error {
			_, err := b.cf.Packages.Upload(ctx, pkg.GUID, bytes.NewReader(bits))
			return err
		})
		if err != nil {
			var cf resource.CloudFoundryError
			if errors.As(err, &cf) && cf.Code == 10008 {
				return fmt.Errorf("%w: Cloud Foundry refused the code package: %s", backend.ErrBadCode, cf.Detail)
			}
			return fmt.Errorf("diego backend: upload code package: %w", err)
		}
		if err := b.waitFor(ctx, "package "+pkg.GUID, func(ctx context.Context) (bool, error) {
			p, err := b.cf.Packages.Get(ctx, pkg.GUID)
			if err != nil {
				return false, err
			}
			switch p.State {
			case resource.PackageStateReady:
				return true, nil
			case resource.PackageStateFailed, resource.PackageStateExpired:
				return false, fmt.Errorf("%w: Cloud Foundry could not process the code package (state %s)", backend.ErrBadCode, p.State)
			}
			return false, nil
		}); err != nil {
			return err
		}
	}
	var build *resource.Build
	err = b.call(ctx, func(ctx context.Context) (err error) {
		build, err = b.cf.Builds.Create(ctx, resource.NewBuildCreate(pkg.GUID))
		return err
	})
	if err != nil {
		return fmt.Errorf("diego backend: stage package %s: %w", pkg.GUID, err)
	}
	var dropletGUID string
	if err := b.waitFor(ctx, "build "+build.GUID, func(ctx context.Context) (bool, error) {
		bd, err := b.cf.Builds.Get(ctx, build.GUID)
		if err != nil {
			return false, err
		}
		switch bd.State {
		case resource.BuildStateStaged:
			if bd.Droplet == nil || bd.Droplet.GUID == "" {
				return false, fmt.Errorf("build %s is STAGED without a droplet", build.GUID)
			}
			dropletGUID = bd.Droplet.GUID
			return true, nil
		case resource.BuildStateFailed:
			msg := "staging failed"
			if bd.Error != nil {
				msg = *bd.Error
			}
			return false, fmt.Errorf("%w: Cloud Foundry could not stage code %q rev %d: %s", backend.ErrBadCode, spec.CodeName, spec.CodeRev, msg)
		}
		return false, nil
	}); err != nil {
		return err
	}
	err = b.call(ctx, func(ctx context.Context) error {
		_, err := b.cf.Droplets.SetCurrentAssociationForApp(ctx, appGUID, dropletGUID)
		return err
	})
	if err != nil {
		return fmt.Errorf("diego backend: set current droplet of app %s: %w", appGUID, err)
	}
	return nil
}

// waitFor polls check until it is done, fails, or ctx ends.
func (b *Backend) waitFor(ctx context.Context, what string, check func(ctx context.Context) (bool, error)) error {
	interval := 100 * time.Millisecond
	for {
		var done bool
		err := b.call(ctx, func(ctx context.Context) (err error) { done, err = check(ctx); return err })
		if err != nil {
			if errors.Is(err, backend.ErrBadCode) {
				return err
			}
			return fmt.Errorf("diego backend: waiting for %s: %w", what, err)
		}
		if done {
			return nil
		}
		t := time.NewTimer(interval)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("diego backend: waiting for %s: %w", what, ctx.Err())
		case <-t.C:
		}
		if interval < 2*time.Second {
			interval *= 2
		}
	}
}
