# Loaded (ruby -r) before bosh-cli's erb_renderer.rb: adds what the director's template
# context has and bosh-cli's lacks, link(), if_link() and else_if_link(), reading the links
# from the context's "links" key ({name => {address, instances, properties}}).
require 'ostruct'

module IronLinkSupport
  def initialize(spec)
    super(spec)
    @iron_links = spec['links'] || {}
  end

  def link(name)
    raise "Can't find link '#{name}'" unless @iron_links.key?(name)
    IronLink.new(name, @iron_links[name])
  end

  def if_link(name)
    return IronActiveElseBlock.new(self) unless @iron_links.key?(name)
    yield IronLink.new(name, @iron_links[name])
    IronInactiveElseBlock.new
  end
end

class IronLink
  attr_reader :name, :address, :instances, :properties

  def initialize(name, h)
    @name = name
    @address = h['address']
    @instances = (h['instances'] || []).map { |i| OpenStruct.new(i) }
    @properties = h['properties'] || {}
  end

  def p(*args)
    names = Array(args[0])
    names.each do |n|
      v = lookup(n)
      return v unless v.nil?
    end
    return args[1] if args.length == 2
    raise "Can't find property '#{names.join("', or '")}' in link '#{@name}'"
  end

  def if_p(*names)
    values = names.map do |n|
      v = lookup(n)
      return IronInactiveElseBlock.new if v.nil?
      v
    end
    yield(*values)
    IronInactiveElseBlock.new
  end

  private

  def lookup(name)
    name.split('.').reduce(@properties) do |ref, key|
      return nil unless ref.is_a?(Hash)
      ref[key]
    end
  end
end

class IronActiveElseBlock
  def initialize(context)
    @context = context
  end

  def else
    yield
  end

  def else_if_link(name, &block)
    @context.if_link(name, &block)
  end

  def else_if_p(*names, &block)
    @context.if_p(*names, &block)
  end
end

class IronInactiveElseBlock
  def else; end

  def else_if_link(*)
    self
  end

  def else_if_p(*)
    self
  end
end

class TemplateEvaluationContext
  prepend IronLinkSupport
end
