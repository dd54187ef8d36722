package boshtool

import (
	"os"

	"github.com/cloudfoundry/bosh-cli/v7/cmd/opts"
	boshtpl "github.com/cloudfoundry/bosh-cli/v7/director/template"
	cfgtypes "github.com/cloudfoundry/config-server/types"
	"github.com/cppforlife/go-patch/patch"
)

// InterpolateOptions are the `bosh int` flags this project uses.
type InterpolateOptions struct {
	opts.VarFlags
	opts.OpsFlags
	Path            patch.Pointer `long:"path" value-name:"OP-PATH" description:"Extract value out of template (e.g.: /private_key)"`
	VarErrors       bool          `long:"var-errs" description:"Expect all variables to be found, otherwise error"`
	VarErrorsUnused bool          `long:"var-errs-unused" description:"Expect all variables to be used, otherwise error"`
}

// Interpolate evaluates a manifest as `bosh int` does (same output bytes): ops-files,
// variables from -v/-l/--var-file/--vars-env, a --vars-store that generates the
// manifest's `variables:` (passwords, certificates, ...), --var-errs, --path.
func Interpolate(manifest []byte, o InterpolateOptions) ([]byte, error) {
	if o.VarsFSStore.IsSet() {
		o.VarsFSStore.ValueGeneratorFactory = cfgtypes.NewValueGeneratorConcrete(opts.NewVarsCertLoader(o.AsVariables()))
	}
	evalOpts := boshtpl.EvaluateOpts{ExpectAllKeys: o.VarErrors, ExpectAllVarsUsed: o.VarErrorsUnused}
	if o.Path.IsSet() {
		evalOpts.PostVarSubstitutionOp = patch.FindOp{Path: o.Path}
		evalOpts.UnescapedMultiline = true
	}
	return boshtpl.NewTemplate(manifest).Evaluate(o.AsVariables(), o.AsOp(), evalOpts)
}

// InterpolateFiles is Interpolate for the common case: a manifest file, ops-files, vars
// files and an optional vars store (generated into if missing), with --var-errs.
func InterpolateFiles(manifestPath string, opsFiles, varsFiles []string, varsStore string) ([]byte, error) {
	var o InterpolateOptions
	o.VarErrors = true
	for _, f := range opsFiles {
		var a opts.OpsFileArg
		if err := a.UnmarshalFlag(f); err != nil {
			return nil, err
		}
		o.OpsFiles = append(o.OpsFiles, a)
	}
	for _, f := range varsFiles {
		var a boshtpl.VarsFileArg
		if err := a.UnmarshalFlag(f); err != nil {
			return nil, err
		}
		o.VarsFiles = append(o.VarsFiles, a)
	}
	if varsStore != "" {
		if err := o.VarsFSStore.UnmarshalFlag(varsStore); err != nil {
			return nil, err
		}
	}
	b, err := os.ReadFile(manifestPath)
	if err != nil {
		return nil, err
	}
	return Interpolate(b, o)
}
