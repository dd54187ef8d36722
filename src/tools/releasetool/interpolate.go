package main

import (
	"fmt"
	"os"

	"github.com/cloudfoundry/bosh-cli/v7/cmd/opts"
	"github.com/jessevdk/go-flags"

	"github.com/ironcf/ironworker-release/src/tools/boshtool"
)

func interpolate(args []string) error {
	var o struct {
		boshtool.InterpolateOptions
		Args struct {
			Manifest opts.FileBytesArg `positional-arg-name:"PATH" description:"Path to a manifest file"`
		} `positional-args:"true" required:"true"`
	}
	p := flags.NewParser(&o, flags.HelpFlag|flags.PassDoubleDash)
	p.Usage = "[OPTIONS] MANIFEST   (the flags of `bosh interpolate`)"
	if _, err := p.ParseArgs(args); err != nil {
		if fe, ok := err.(*flags.Error); ok && fe.Type == flags.ErrHelp {
			fmt.Println(fe.Message)
			return nil
		}
		return err
	}
	out, err := boshtool.Interpolate(o.Args.Manifest.Bytes, o.InterpolateOptions)
	if err != nil {
		return err
	}
	_, err = os.Stdout.Write(out)
	return err
}
