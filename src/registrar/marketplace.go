package registrar

import (
	"context"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/cloudfoundry/go-cfclient/v3/client"
	cfconfig "github.com/cloudfoundry/go-cfclient/v3/config"
	"github.com/cloudfoundry/go-cfclient/v3/resource"

	"github.com/ironcf/ironworker-release/src/config"
)

// CredentialsAnnotation is the broker annotation holding a salted PBKDF2 digest of the
// URL and basic-auth credentials last pushed successfully. Cloud Controller never returns
// a broker's credentials, so this is how a pass tells whether they need pushing again
// without writing every time.
const CredentialsAnnotation = "ironworker.cf/credentials-digest"

const pbkdf2Iterations = 50_000

// MarketplaceOptions tune the marketplace reconciler; zero values get defaults.
type MarketplaceOptions struct {
	Logger *slog.Logger
	// Transport is the HTTP transport under every CC and UAA request.
	Transport http.RoundTripper
	// JobPollInterval is how often a CC job is polled. Default 1s.
	JobPollInterval time.Duration
}

// Marketplace makes Cloud Controller match the config: the broker, its plans'
// visibility, and the diego backend's org, space and space quota.
type Marketplace struct {
	cfg  config.Registrar
	opts MarketplaceOptions
	log  *slog.Logger

	mu sync.Mutex
	cf *client.Client
}

// NewMarketplace makes a reconciler; Cloud Controller is first contacted by a pass.
func NewMarketplace(cfg config.Registrar, opts MarketplaceOptions) *Marketplace {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.JobPollInterval <= 0 {
		opts.JobPollInterval = time.Second
	}
	return &Marketplace{cfg: cfg, opts: opts, log: opts.Logger}
}

// client builds the go-cfclient client on first use (it reads CC's root to find UAA),
// so that a Cloud Controller that is down at start-up only fails passes.
func (m *Marketplace) client() (*client.Client, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.cf != nil {
		return m.cf, nil
	}
	c := m.cfg.CF
	base := m.opts.Transport
	if base == nil {
		t := http.DefaultTransport.(*http.Transport).Clone()
		if c.SkipSSLValidation {
			t.TLSClientConfig = &tls.Config{InsecureSkipVerify: true} //nolint:gosec // lab foundations, by explicit config
		}
		base = t
	}
	opts := []cfconfig.Option{
		cfconfig.ClientCredentials(c.ClientID, c.ClientSecret),
		cfconfig.HttpClient(&http.Client{Transport: base}),
		cfconfig.RequestTimeout(c.RequestTimeout.Std()),
		cfconfig.UserAgent("iron-registrar"),
	}
	if c.SkipSSLValidation {
		opts = append(opts, cfconfig.SkipTLSValidation())
	}
	cc, err := cfconfig.New(strings.TrimRight(c.APIURL, "/"), opts...)
	if err != nil {
		return nil, fmt.Errorf("Cloud Controller at %s: %w", c.APIURL, err)
	}
	cf, err := client.New(cc)
	if err != nil {
		return nil, err
	}
	m.cf = cf
	return cf, nil
}

func (m *Marketplace) poll(ctx context.Context, cf *client.Client, what, jobGUID string) error {
	if jobGUID == "" {
		return nil
	}
	opts := client.NewPollingOptions()
	opts.CheckInterval = m.opts.JobPollInterval
	opts.Timeout = m.cfg.Marketplace.JobTimeout.Std()
	if err := cf.Jobs.PollComplete(ctx, jobGUID, opts); err != nil {
		if errors.Is(err, client.ErrAsyncProcessTimeout) {
			return fmt.Errorf("%s: CC job %s did not finish within %s", what, jobGUID, opts.Timeout)
		}
		return fmt.Errorf("%s: CC job %s failed: %w", what, jobGUID, err)
	}
	return nil
}

// Pass reconciles once. It reads everything and writes only what differs.
func (m *Marketplace) Pass(ctx context.Context) error {
	cf, err := m.client()
	if err != nil {
		return err
	}
	var errs []error
	if m.cfg.Marketplace.Diego != nil {
		if err := m.ensureDiego(ctx, cf); err != nil {
			errs = append(errs, err)
		}
	}
	b, err := m.ensureBroker(ctx, cf)
	if err != nil {
		return errors.Join(append(errs, err)...)
	}
	if err := m.ensureVisibility(ctx, cf, b); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}

func (m *Marketplace) findBroker(ctx context.Context, cf *client.Client) (*resource.ServiceBroker, error) {
	opts := client.NewServiceBrokerListOptions()
	opts.Names.EqualTo(m.cfg.Marketplace.Broker.Name)
	list, err := cf.ServiceBrokers.ListAll(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("look up broker %q: %w", m.cfg.Marketplace.Broker.Name, err)
	}
	if len(list) == 0 {
		return nil, nil
	}
	return list[0], nil
}

func (m *Marketplace) offerings(ctx context.Context, cf *client.Client, brokerGUID string) ([]*resource.ServiceOffering, error) {
	opts := client.NewServiceOfferingListOptions()
	opts.ServiceBrokerGUIDs.EqualTo(brokerGUID)
	list, err := cf.ServiceOfferings.ListAll(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("list the broker's service offerings: %w", err)
	}
	return list, nil
}

func (m *Marketplace) plans(ctx context.Context, cf *client.Client, brokerGUID string) ([]*resource.ServicePlan, error) {
	opts := client.NewServicePlanListOptions()
	opts.ServiceBrokerGUIDs.EqualTo(brokerGUID)
	list, err := cf.ServicePlans.ListAll(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("list the broker's plans: %w", err)
	}
	return list, nil
}

// ensureBroker creates the broker, repairs one whose catalog never synchronised (a failed
// create job leaves such a broker behind), or pushes a changed URL or credentials.
func (m *Marketplace) ensureBroker(ctx context.Context, cf *client.Client) (*resource.ServiceBroker, error) {
	bc := m.cfg.Marketplace.Broker
	b, err := m.findBroker(ctx, cf)
	if err != nil {
		return nil, err
	}
	if b != nil {
		offs, err := m.offerings(ctx, cf, b.GUID)
		if err != nil {
			return nil, err
		}
		if len(offs) == 0 {
			// No catalog: the create job failed (or never finished). With no offerings
			// there can be no service instances, so delete and create afresh.
			m.log.Warn("broker has no catalog (a failed or unfinished CC job); re-creating it", "broker", bc.Name, "guid", b.GUID)
			job, err := cf.ServiceBrokers.Delete(ctx, b.GUID)
			if err != nil {
				return nil, fmt.Errorf("delete broken broker %q: %w", bc.Name, err)
			}
			if err := m.poll(ctx, cf, "delete broken broker "+bc.Name, job); err != nil {
				return nil, err
			}
			b = nil
		}
	}
	if b == nil {
		digest := newDigest(bc.URL, bc.Username, bc.Password)
		req := resource.NewServiceBrokerCreate(bc.Name, bc.URL, bc.Username, bc.Password)
		req.Metadata = &resource.Metadata{Annotations: map[string]*string{CredentialsAnnotation: &digest}}
		m.log.Info("creating broker", "broker", bc.Name, "url", bc.URL)
		job, err := cf.ServiceBrokers.Create(ctx, req)
		if err != nil {
			return nil, fmt.Errorf("create broker %q: %w", bc.Name, err)
		}
		if err := m.poll(ctx, cf, "create broker "+bc.Name, job); err != nil {
			return nil, err
		}
		if b, err = m.findBroker(ctx, cf); err != nil {
			return nil, err
		}
		if b == nil {
			return nil, fmt.Errorf("broker %q is missing right after its create job completed", bc.Name)
		}
		m.log.Info("broker created", "broker", bc.Name, "guid", b.GUID)
		return b, nil
	}
	var stored string
	if b.Metadata != nil && b.Metadata.Annotations[CredentialsAnnotation] != nil {
		stored = *b.Metadata.Annotations[CredentialsAnnotation]
	}
	if b.URL == bc.URL && checkDigest(stored, bc.URL, bc.Username, bc.Password) {
		return b, nil
	}
	m.log.Info("updating broker URL and credentials", "broker", bc.Name, "url", bc.URL, "url_changed", b.URL != bc.URL)
	job, _, err := cf.ServiceBrokers.Update(ctx, b.GUID, resource.NewServiceBrokerUpdate().WithURL(bc.URL).WithCredentials(bc.Username, bc.Password))
	if err != nil {
		return nil, fmt.Errorf("update broker %q: %w", bc.Name, err)
	}
	if err := m.poll(ctx, cf, "update broker "+bc.Name, job); err != nil {
		return nil, err
	}
	// The digest is written only once the update job succeeded: a failed update is
	// rolled back by Cloud Controller and is then retried by the next pass.
	digest := newDigest(bc.URL, bc.Username, bc.Password)
	upd := resource.NewServiceBrokerUpdate()
	upd.Metadata = &resource.Metadata{Annotations: map[string]*string{CredentialsAnnotation: &digest}}
	if _, b, err = cf.ServiceBrokers.Update(ctx, b.GUID, upd); err != nil {
		return nil, fmt.Errorf("annotate broker %q: %w", bc.Name, err)
	}
	return b, nil
}

func digestOf(salt []byte, url, user, pass string) []byte {
	key, err := pbkdf2.Key(sha256.New, url+"\x00"+user+"\x00"+pass, salt, pbkdf2Iterations, 32)
	if err != nil {
		panic(err)
	}
	return key
}

func newDigest(url, user, pass string) string {
	salt := make([]byte, 16)
	_, _ = rand.Read(salt)
	return "pbkdf2-sha256:" + hex.EncodeToString(salt) + ":" + hex.EncodeToString(digestOf(salt, url, user, pass))
}

func checkDigest(stored, url, user, pass string) bool {
	parts := strings.Split(stored, ":")
	if len(parts) != 3 || parts[0] != "pbkdf2-sha256" {
		return false
	}
	salt, err1 := hex.DecodeString(parts[1])
	want, err2 := hex.DecodeString(parts[2])
	if err1 != nil || err2 != nil {
		return false
	}
	return subtle.ConstantTimeCompare(digestOf(salt, url, user, pass), want) == 1
}

// desiredVisibility is the configured visibility of a plan.
func (m *Marketplace) desiredVisibility(plan string) (string, []string) {
	mc := m.cfg.Marketplace
	for _, p := range mc.Plans {
		if p.Name == plan {
			return p.Visibility, p.Orgs
		}
	}
	return mc.DefaultVisibility, mc.DefaultOrgs
}

// orgGUIDs resolves org names (all of them or an error naming the missing ones).
func (m *Marketplace) orgGUIDs(ctx context.Context, cf *client.Client, names []string, cache map[string]string) ([]string, error) {
	var want []string
	for _, n := range names {
		if _, ok := cache[n]; !ok {
			want = append(want, n)
		}
	}
	if len(want) > 0 {
		opts := client.NewOrganizationListOptions()
		opts.Names.EqualTo(want...)
		list, err := cf.Organizations.ListAll(ctx, opts)
		if err != nil {
			return nil, fmt.Errorf("look up orgs %v: %w", want, err)
		}
		for _, o := range list {
			cache[o.Name] = o.GUID
		}
	}
	var guids, missing []string
	for _, n := range names {
		if g, ok := cache[n]; ok && g != "" {
			guids = append(guids, g)
		} else {
			missing = append(missing, n)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("orgs not found: %s", strings.Join(missing, ", "))
	}
	sort.Strings(guids)
	return slices.Compact(guids), nil
}

// ensureVisibility sets each plan's visibility to the configured one.
func (m *Marketplace) ensureVisibility(ctx context.Context, cf *client.Client, b *resource.ServiceBroker) error {
	plans, err := m.plans(ctx, cf, b.GUID)
	if err != nil {
		return err
	}
	var errs []error
	have := map[string]bool{}
	orgCache := map[string]string{}
	for _, p := range plans {
		have[p.Name] = true
		vis, orgs := m.desiredVisibility(p.Name)
		switch vis {
		case "public", "admin":
			if p.VisibilityType == vis {
				continue
			}
			m.log.Info("setting plan visibility", "plan", p.Name, "from", p.VisibilityType, "to", vis)
			t := resource.ServicePlanVisibilityPublic
			if vis == "admin" {
				t = resource.ServicePlanVisibilityAdmin
			}
			if _, err := cf.ServicePlansVisibility.Update(ctx, p.GUID, resource.NewServicePlanVisibilityUpdate(t)); err != nil {
				errs = append(errs, fmt.Errorf("plan %q: set visibility %s: %w", p.Name, vis, err))
			}
		case "organization":
			guids, err := m.orgGUIDs(ctx, cf, orgs, orgCache)
			if err != nil {
				errs = append(errs, fmt.Errorf("plan %q: %w", p.Name, err))
				continue
			}
			if p.VisibilityType == "organization" {
				cur, err := cf.ServicePlansVisibility.Get(ctx, p.GUID)
				if err != nil {
					errs = append(errs, fmt.Errorf("plan %q: read visibility: %w", p.Name, err))
					continue
				}
				var got []string
				for _, o := range cur.Organizations {
					got = append(got, o.GUID)
				}
				sort.Strings(got)
				if slices.Equal(slices.Compact(got), guids) {
					continue
				}
			}
			m.log.Info("setting plan visibility", "plan", p.Name, "from", p.VisibilityType, "to", "organization", "orgs", orgs)
			req := resource.NewServicePlanVisibilityUpdate(resource.ServicePlanVisibilityOrganization)
			for _, g := range guids {
				req.Organizations = append(req.Organizations, resource.ServicePlanVisibilityRelation{GUID: g})
			}
			if _, err := cf.ServicePlansVisibility.Update(ctx, p.GUID, req); err != nil {
				errs = append(errs, fmt.Errorf("plan %q: set visibility organization: %w", p.Name, err))
			}
		}
	}
	for _, p := range m.cfg.Marketplace.Plans {
		if !have[p.Name] {
			errs = append(errs, fmt.Errorf("plan %q is configured but not in broker %q's catalog", p.Name, b.Name))
		}
	}
	return errors.Join(errs...)
}

// ensureDiego makes the diego backend's org and space exist, with the space quota.
func (m *Marketplace) ensureDiego(ctx context.Context, cf *client.Client) error {
	d := m.cfg.Marketplace.Diego
	oopts := client.NewOrganizationListOptions()
	oopts.Names.EqualTo(d.Org)
	orgs, err := cf.Organizations.ListAll(ctx, oopts)
	if err != nil {
		return fmt.Errorf("look up org %q: %w", d.Org, err)
	}
	var orgGUID string
	if len(orgs) > 0 {
		orgGUID = orgs[0].GUID
	} else {
		m.log.Info("creating org", "org", d.Org)
		o, err := cf.Organizations.Create(ctx, resource.NewOrganizationCreate(d.Org))
		if err != nil {
			return fmt.Errorf("create org %q: %w", d.Org, err)
		}
		orgGUID = o.GUID
	}
	sopts := client.NewSpaceListOptions()
	sopts.Names.EqualTo(d.Space)
	sopts.OrganizationGUIDs.EqualTo(orgGUID)
	spaces, err := cf.Spaces.ListAll(ctx, sopts)
	if err != nil {
		return fmt.Errorf("look up space %q: %w", d.Space, err)
	}
	var spaceGUID string
	if len(spaces) > 0 {
		spaceGUID = spaces[0].GUID
	} else {
		m.log.Info("creating space", "org", d.Org, "space", d.Space)
		sp, err := cf.Spaces.Create(ctx, resource.NewSpaceCreate(d.Space, orgGUID))
		if err != nil {
			return fmt.Errorf("create space %q: %w", d.Space, err)
		}
		spaceGUID = sp.GUID
	}
	if d.SpaceQuota == nil {
		return nil
	}
	return m.ensureSpaceQuota(ctx, cf, orgGUID, spaceGUID)
}

func eqLimit(a, b *int) bool {
	if a == nil || b == nil {
		return a == nil && b == nil
	}
	return *a == *b
}

func (m *Marketplace) ensureSpaceQuota(ctx context.Context, cf *client.Client, orgGUID, spaceGUID string) error {
	q := m.cfg.Marketplace.Diego.SpaceQuota
	opts := client.NewSpaceQuotaListOptions()
	opts.Names.EqualTo(q.Name)
	opts.OrganizationGUIDs.EqualTo(orgGUID)
	list, err := cf.SpaceQuotas.ListAll(ctx, opts)
	if err != nil {
		return fmt.Errorf("look up space quota %q: %w", q.Name, err)
	}
	if len(list) == 0 {
		m.log.Info("creating space quota", "quota", q.Name)
		req := resource.NewSpaceQuotaCreate(q.Name, orgGUID)
		req.Apps = &resource.AppsQuota{TotalMemoryInMB: q.TotalMemoryInMB, PerProcessMemoryInMB: q.PerProcessMemoryInMB,
			TotalInstances: q.TotalInstances, PerAppTasks: q.PerAppTasks}
		req.Relationships.Spaces = resource.NewToManyRelationships([]string{spaceGUID})
		if _, err := cf.SpaceQuotas.Create(ctx, req); err != nil {
			return fmt.Errorf("create space quota %q: %w", q.Name, err)
		}
		return nil
	}
	cur := list[0]
	a := cur.Apps
	if !eqLimit(a.TotalMemoryInMB, q.TotalMemoryInMB) || !eqLimit(a.PerProcessMemoryInMB, q.PerProcessMemoryInMB) ||
		!eqLimit(a.TotalInstances, q.TotalInstances) || !eqLimit(a.PerAppTasks, q.PerAppTasks) {
		m.log.Info("updating space quota limits", "quota", q.Name)
		req := resource.NewSpaceQuotaUpdate()
		req.Apps = &resource.AppsQuota{TotalMemoryInMB: q.TotalMemoryInMB, PerProcessMemoryInMB: q.PerProcessMemoryInMB,
			TotalInstances: q.TotalInstances, PerAppTasks: q.PerAppTasks, LogRateLimitInBytesPerSecond: a.LogRateLimitInBytesPerSecond}
		if _, err := cf.SpaceQuotas.Update(ctx, cur.GUID, req); err != nil {
			return fmt.Errorf("update space quota %q: %w", q.Name, err)
		}
	}
	applied := false
	if cur.Relationships.Spaces != nil {
		for _, r := range cur.Relationships.Spaces.Data {
			applied = applied || r.GUID == spaceGUID
		}
	}
	if !applied {
		m.log.Info("applying space quota to the space", "quota", q.Name)
		if _, err := cf.SpaceQuotas.Apply(ctx, cur.GUID, []string{spaceGUID}); err != nil {
			return fmt.Errorf("apply space quota %q: %w", q.Name, err)
		}
	}
	return nil
}

// Deregister removes the service from the marketplace: plan visibility, then the broker
// (waiting for its CC job). While service instances of its plans exist it refuses,
// unless purge, which first purges the broker's service offerings (as `cf
// purge-service-offering`: instances and bindings are forgotten by Cloud Controller
// without asking the broker).
func (m *Marketplace) Deregister(ctx context.Context, purge bool) error {
	cf, err := m.client()
	if err != nil {
		return err
	}
	bc := m.cfg.Marketplace.Broker
	b, err := m.findBroker(ctx, cf)
	if err != nil {
		return err
	}
	if b == nil {
		m.log.Info("no broker to delete", "broker", bc.Name)
		return nil
	}
	plans, err := m.plans(ctx, cf, b.GUID)
	if err != nil {
		return err
	}
	if len(plans) > 0 {
		opts := client.NewServiceInstanceListOptions()
		for _, p := range plans {
			opts.ServicePlanGUIDs.Values = append(opts.ServicePlanGUIDs.Values, p.GUID)
		}
		insts, err := cf.ServiceInstances.ListAll(ctx, opts)
		if err != nil {
			return fmt.Errorf("list service instances of broker %q: %w", bc.Name, err)
		}
		if len(insts) > 0 && !purge {
			var names []string
			for _, si := range insts {
				names = append(names, si.Name)
			}
			return fmt.Errorf("broker %q still has %d service instance(s) (%s): delete them first, or deregister with --purge to make Cloud Controller forget them",
				bc.Name, len(insts), strings.Join(names, ", "))
		}
		if len(insts) > 0 {
			offs, err := m.offerings(ctx, cf, b.GUID)
			if err != nil {
				return err
			}
			for _, o := range offs {
				m.log.Warn("purging service offering", "offering", o.Name, "guid", o.GUID)
				if err := m.purgeOffering(ctx, cf, o.GUID); err != nil {
					return fmt.Errorf("purge service offering %q: %w", o.Name, err)
				}
			}
			if plans, err = m.plans(ctx, cf, b.GUID); err != nil {
				return err
			}
		}
	}
	for _, p := range plans {
		if p.VisibilityType == "admin" {
			continue
		}
		m.log.Info("removing plan visibility", "plan", p.Name)
		if _, err := cf.ServicePlansVisibility.Update(ctx, p.GUID, resource.NewServicePlanVisibilityUpdate(resource.ServicePlanVisibilityAdmin)); err != nil {
			return fmt.Errorf("plan %q: remove visibility: %w", p.Name, err)
		}
	}
	m.log.Info("deleting broker", "broker", bc.Name, "guid", b.GUID)
	job, err := cf.ServiceBrokers.Delete(ctx, b.GUID)
	if err != nil {
		return fmt.Errorf("delete broker %q: %w", bc.Name, err)
	}
	return m.poll(ctx, cf, "delete broker "+bc.Name, job)
}

// purgeOffering is DELETE /v3/service_offerings/:guid?purge=true, which go-cfclient
// beta.1 cannot send.
func (m *Marketplace) purgeOffering(ctx context.Context, cf *client.Client, guid string) error {
	u := strings.TrimRight(m.cfg.CF.APIURL, "/") + "/v3/service_offerings/" + guid + "?purge=true"
	req, err := http.NewRequestWithContext(ctx, http.MethodDelete, u, nil)
	if err != nil {
		return err
	}
	resp, err := cf.ExecuteAuthRequest(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	return nil
}
